"""A request nested past what protobuf parses is refused saying so, with where, not "error parsing".

A client whose protobuf parses deeper (Go's does) can build such a request
legitimately; it needs to know the nesting is why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error, wire_walk
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.hardening_support import fails, fields_of
from tests.workflow_helpers import workflow


@pytest.fixture
def workflows(stigmer_app: Application, stigmer_server: Server) -> Iterator[KindClient]:
    with grpc.insecure_channel(stigmer_server.address) as channel:
        yield KindClient(channel, stigmer_app.registry.kind("Workflow"))


def _nested(levels: int) -> Any:
    made = workflow(f"nested {levels}")
    inner: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        inner = {"x": inner}
    made.spec.tasks[0].task_config.Clear()
    made.spec.tasks[0].task_config.update(inner)
    return made


@pytest.mark.parametrize("levels", [20, 31, 32, 60])
def test_too_deep_a_request_is_refused_naming_the_limit(workflows: KindClient, levels: int) -> None:
    error = fails(grpc.StatusCode.INVALID_ARGUMENT, lambda: workflows.create(_nested(levels)))
    assert fields_of(error) == ["spec.tasks[0].task_config"]
    detail = from_rpc_error(error).violations[0].description  # type: ignore[attr-defined]
    assert "nests deeper than" in detail and "levels" in detail, detail
    assert "Error parsing" not in error.details()


def test_bytes_that_are_no_message_are_still_told_they_do_not_parse(
    stigmer_app: Application, stigmer_server: Server
) -> None:
    kind = stigmer_app.registry.kind("Workflow")
    path = next(path for path, binding in kind.methods.items() if binding.operation == "create")
    with grpc.insecure_channel(stigmer_server.address) as channel:
        create = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        error = fails(grpc.StatusCode.INVALID_ARGUMENT, lambda: create(b"\x0a\xff", timeout=10))
    assert fields_of(error) == ["(request)"]


def test_the_walk_that_finds_the_nesting_reads_a_bounded_number_of_fields() -> None:
    """It runs only on a request that failed to parse, but walked every field of one: a few MiB of
    one-byte fields cost the server a second of CPU per request. Past its budget it gives up, and
    the request is told only that it does not parse."""
    deep = _nested(60).SerializeToString()
    padding = b"\xf8\x06\x01"  # field 111 (no such field), a varint: read as a field and skipped
    assert wire_walk.too_deep(deep, workflow_pb2.Workflow.DESCRIPTOR) == "spec.tasks[0].task_config"
    within = padding * (wire_walk.FIELD_BUDGET // 2) + deep
    assert wire_walk.too_deep(within, workflow_pb2.Workflow.DESCRIPTOR) == "spec.tasks[0].task_config"
    past = padding * wire_walk.FIELD_BUDGET + deep
    assert wire_walk.too_deep(past, workflow_pb2.Workflow.DESCRIPTOR) is None
