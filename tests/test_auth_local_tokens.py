"""A token a program gives ``connect()`` for its own store is held to, never quietly dropped.

On a store that requires no token, a token that is not valid is ignored like no token over the
network (the official SDK sends some key to an unconfigured local daemon). In process (and on the
daemon's Unix socket), where only this package's client sends one because its program asked to
try that token's roles, it was ignored too: a revoked viewer's token wrote as the local
administrator, and a second authorization entry made a viewer's calls the administrator's.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, connect, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.auth_support import ALPHA, make_token


def _create(channel: grpc.Channel, name: str, **kwargs: object) -> agent_pb2.Agent:
    made = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=ALPHA))
    return agent_grpc.AgentCommandControllerStub(channel).create(made, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_a_revoked_token_given_to_connect_in_process_is_refused_not_run_as_the_administrator(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        editor, made = make_token(app, ALPHA, "editor", "tries roles")
        viewer, _ = make_token(app, ALPHA, "viewer", "reads")
        _create(app.channel(), "seed")  # the org exists
    with connect(data_dir=tmp_path / "data", token=editor) as client:
        assert _create(client.channel, "as-editor").status.audit.spec_audit.created_by.id == f"token:{ALPHA}/tries-roles"
        with connect(data_dir=tmp_path / "data") as admin:  # the same store, shared in this process
            KindClient(admin.channel, "ApiToken").delete(made.metadata.id)
        with pytest.raises(grpc.RpcError) as refused:
            _create(client.channel, "after-revoke")
        assert from_rpc_error(refused.value).reason in ("TOKEN_REVOKED", "TOKEN_INVALID"), refused.value
    with connect(data_dir=tmp_path / "data", token=viewer) as client:
        twice = [("authorization", f"Bearer {viewer}")]  # a second entry: refused, not the administrator's
        with pytest.raises(grpc.RpcError) as refused:
            _create(client.channel, "escalated", metadata=twice)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_over_the_network_a_daemon_that_requires_no_token_still_ignores_an_invalid_one(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(server.address) as channel:
                bogus = [("authorization", "Bearer stg_" + "x" * 43)]
                assert _create(channel, "sdk-key", metadata=bogus).status.audit.spec_audit.created_by.id == "local"
        finally:
            server.stop(grace=1)
