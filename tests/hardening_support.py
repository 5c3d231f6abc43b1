"""Shared by the hardening tests: a real server, and the checks every one of them ends with."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server


def network(app: Application) -> tuple[Server, grpc.Channel]:
    server = Server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    return server, grpc.insecure_channel(server.address)


def fails(code: grpc.StatusCode, call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code`` (never INTERNAL or UNKNOWN)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, f"{caught.value.code()}: {caught.value.details()}"
    return caught.value


def fields_of(error: grpc.RpcError) -> list[str]:
    return [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]


def assert_serving(channel: grpc.Channel, app: Application) -> None:
    """The daemon answers health SERVING and still reads and writes."""
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    agents = KindClient(channel, app.registry.kind("Agent"))
    made = agents.create(agent(f"still serving {uuid.uuid4().hex[:8]}"))
    assert agents.get(made.metadata.id) == made  # type: ignore[attr-defined]


def agent(name: str, **meta: Any) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, **meta))
