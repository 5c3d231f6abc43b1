"""A watch across orgs reports only the orgs its caller belongs to, as a list does.

The watch's AUTHORIZE step refuses an org the caller is not in (NOT_FOUND,
existence not revealed); a watch that names no org must still drop every
event of another org, since its events come from one log shared by all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.auth_support import ALPHA, BETA, make_token, with_token


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Application]:
    app = Application.open(tmp_path / "data", durable=False, require_auth=True)
    yield app
    app.close()


@pytest.fixture
def server(app: Application) -> Iterator[Server]:
    server = Server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    yield server
    server.stop(grace=1)


def _agent(org: str, name: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    agent.metadata.org = org
    agent.spec.instructions = "Be brief."
    return agent


def test_a_watch_across_orgs_sees_only_the_callers_org(app: Application, server: Server) -> None:
    token, _ = make_token(app, ALPHA, "viewer")
    admin = KindClient(app.channel(), app.registry.kind("Agent"))
    with grpc.insecure_channel(server.address) as raw:
        watch = watch_pb2_grpc.WatchStub(with_token(raw, token))
        stream = watch.Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=20)
        start = next(stream)
        assert start.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
        admin.create(_agent(BETA, "beta one"))
        mine = admin.create(_agent(ALPHA, "alpha one"))
        admin.create(_agent(BETA, "beta two"))
        last = admin.create(_agent(ALPHA, "alpha two"))
        seen = []
        for event in stream:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                continue
            obj = agent_pb2.Agent()
            event.object.Unpack(obj)
            seen.append((obj.metadata.org, obj.metadata.id))
            if obj.metadata.id == last.metadata.id:
                break
        stream.cancel()
    assert seen == [(ALPHA, mine.metadata.id), (ALPHA, last.metadata.id)]


def test_a_watch_of_another_org_is_not_found(app: Application, server: Server) -> None:
    token, _ = make_token(app, ALPHA, "viewer")
    with grpc.insecure_channel(server.address) as raw:
        watch = watch_pb2_grpc.WatchStub(with_token(raw, token))
        with pytest.raises(grpc.RpcError) as refused:
            next(watch.Watch(watch_pb2.WatchRequest(kind="Agent", org=BETA), timeout=10))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
