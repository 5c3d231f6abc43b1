"""``connect(data_dir=…, token=…)`` reaching a running daemon through its Unix socket: the token
goes with every call, so the caller is the token's principal (roles are tried locally that way),
not the local administrator the owner's socket makes of a call without one."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.local_socket import socket_path

from .conftest import TIMEOUT, Stigmer


def _agent(name: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    return agent


def test_a_token_given_to_connect_goes_through_the_daemons_socket(stigmer: Stigmer, daemon: str) -> None:
    viewer = stigmer.ok("token", "create", "--role", "viewer", "--name", "v").strip()
    socket = socket_path(stigmer.data_dir)
    assert socket is not None and socket.exists(), "the daemon serves its owner on a Unix socket"
    with connect(data_dir=stigmer.data_dir, token=viewer) as client:
        assert not client.in_process and "through the daemon's Unix socket" in repr(client)
        commands = client.stub(agent_grpc.AgentCommandControllerStub)
        with pytest.raises(grpc.RpcError) as refused:
            commands.create(_agent("by the viewer"), timeout=TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "token:local/v (viewer in local)" in (refused.value.details() or "")
    with connect(data_dir=stigmer.data_dir) as client:  # the owner, without a token
        made = client.stub(agent_grpc.AgentCommandControllerStub).create(_agent("by the owner"), timeout=TIMEOUT)
        assert made.status.audit.spec_audit.created_by.id == "local"
