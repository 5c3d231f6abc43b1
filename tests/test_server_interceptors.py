"""A plugin's server interceptors run on the network path, not in process; with one, an LMDB daemon
serves on grpc's sync server (interceptors are sync), without one on its asyncio server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from tests.plugin_server_support import GatePlugin


def test_a_plugins_interceptor_sees_network_calls_and_may_refuse_them(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    plugin = GatePlugin()
    pm = plugin_manager(plugins=[plugin])
    with Application.open(tmp_path / "data", pm=pm, durable=False, store=stigmer_store) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(server.address)
        try:
            assert not server.asynchronous
            command = agent_grpc.AgentCommandControllerStub(channel)
            made = command.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="gated")), timeout=10)
            assert "/stigmer.agentic.agent.v1.AgentCommandController/create" in plugin.gate.seen
            query = agent_grpc.AgentQueryControllerStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                query.get(agent_pb2.AgentId(value=made.metadata.id), metadata=(("x-gate", "closed"),), timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.value.details() == "the gate is closed"
            seen = len(plugin.gate.seen)
            agent_grpc.AgentQueryControllerStub(app.channel()).get(agent_pb2.AgentId(value=made.metadata.id))
            assert len(plugin.gate.seen) == seen  # the in-process channel does not pass through it
        finally:
            channel.close()
            server.stop(grace=1)


# LMDB only: its subject is LMDB's choice of server (a PostgreSQL daemon serves on grpc's sync server).
def test_an_lmdb_daemon_without_interceptors_serves_on_grpcs_asyncio_server(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        try:
            assert server.asynchronous
        finally:
            server.stop(grace=0)
