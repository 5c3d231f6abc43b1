"""Helpers shared by the Prompt tests: stubs on a channel, prompts, and error fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import pytest
from stigmer_core import InvalidArgument, from_rpc_error

from acme_prompt.api.prompt.v1 import prompt_pb2, service_pb2_grpc

TIMEOUT = 10.0


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.commands = service_pb2_grpc.PromptCommandControllerStub(channel)
        self.queries = service_pb2_grpc.PromptQueryControllerStub(channel)


def prompt(
    name: str, template: str, variables: Mapping[str, prompt_pb2.PromptVariable] | None = None, org: str = ""
) -> prompt_pb2.Prompt:
    built = prompt_pb2.Prompt()
    built.metadata.name = name
    built.metadata.org = org
    built.spec.template = template
    for key, variable in (variables or {}).items():
        built.spec.variables[key].CopyFrom(variable)
    return built


def var(default: str = "", *, required: bool = False) -> prompt_pb2.PromptVariable:
    return prompt_pb2.PromptVariable(default_value=default, required=required)


def invalid_fields(call: Callable[..., Any], request: Any) -> list[tuple[str, str]]:
    """Call, expect INVALID_ARGUMENT, and return its (field, description) violations."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgument)
    return [(v.field, v.description) for v in error.violations]
