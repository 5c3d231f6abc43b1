"""A watch across orgs reports only the orgs its caller belongs to, as a list does.

The watch's AUTHORIZE step refuses an org the caller is not in (NOT_FOUND,
existence not revealed); a watch that names no org must still drop every
event of another org, since its events come from one log shared by all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.auth_support import ALPHA, BETA, make_token, requiring_tokens, served, with_token


@pytest.fixture
def app(tmp_path: Any, stigmer_store: str | None) -> Iterator[Application]:
    """Once per engine: a team server keeps orgs apart on PostgreSQL as a daemon does on LMDB."""
    with requiring_tokens(tmp_path, stigmer_store) as app:
        yield app


@pytest.fixture
def server(app: Application) -> Iterator[Server]:
    with served(app) as server:
        yield server


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


def _next_object_or_status(stream: Any) -> tuple[grpc.StatusCode, list[str]]:
    """Read past bookmarks until the stream delivers an object (its slug) or ends (its status)."""
    slugs: list[str] = []
    try:
        for event in stream:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                continue
            obj = agent_pb2.Agent()
            event.object.Unpack(obj)
            slugs.append(obj.metadata.slug)
            return grpc.StatusCode.OK, slugs
    except grpc.RpcError as exc:
        return exc.code(), slugs
    return grpc.StatusCode.OK, slugs


@pytest.mark.parametrize("how", ["revoked", "deleted"])
def test_a_watch_ends_when_its_token_is_revoked_or_deleted(app: Application, server: Server, how: str) -> None:
    token, made = make_token(app, ALPHA, "viewer", "laptop")
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    admin = KindClient(app.channel(), app.registry.kind("Agent"))
    with grpc.insecure_channel(server.address) as raw:
        stream = watch_pb2_grpc.WatchStub(with_token(raw, token)).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=20)
        assert next(stream).type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
        admin.create(_agent(ALPHA, "before"))
        assert _next_object_or_status(stream) == (grpc.StatusCode.OK, ["before"])
        if how == "revoked":
            tokens.call("revoke", apitoken_pb2.ApiTokenId(value=made.metadata.id))
        else:
            tokens.delete(made.metadata.id)
        admin.create(_agent(ALPHA, "after"))
        assert _next_object_or_status(stream) == (grpc.StatusCode.UNAUTHENTICATED, [])


def test_a_watch_ends_when_its_token_expires(app: Application, server: Server) -> None:
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    short = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role="viewer"))
    short.metadata.name = "short"
    short.metadata.org = ALPHA
    short.spec.expires_at.FromSeconds(int(time.time()) + 2)
    token = tokens.create(short).status.token  # type: ignore[attr-defined]
    admin = KindClient(app.channel(), app.registry.kind("Agent"))
    with grpc.insecure_channel(server.address) as raw:
        stream = watch_pb2_grpc.WatchStub(with_token(raw, token)).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=20)
        assert next(stream).type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
        deadline = short.spec.expires_at.seconds
        while time.time() < deadline + 0.2:
            time.sleep(0.1)
        admin.create(_agent(ALPHA, "after expiry"))
        assert _next_object_or_status(stream) == (grpc.StatusCode.UNAUTHENTICATED, [])


def _first_bookmark(watch: Any, kind: str, revision: int, position: int) -> int:
    request = watch_pb2.WatchRequest(kind=kind, since_revision=revision, since_position=position)
    stream = watch.Watch(request, timeout=10)
    try:
        first = next(stream)
    finally:
        stream.cancel()
    assert first.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
    return int(first.revision)


def test_a_resume_inside_a_revision_tells_nothing_of_another_orgs_events(app: Application, server: Server) -> None:
    """Resumed at a position, the first bookmark says whether more of that revision follows: only
    events the watch would send may count, or it tells one org what another wrote there."""
    alpha, _ = make_token(app, ALPHA, "viewer")
    beta, _ = make_token(app, BETA, "viewer")
    written = KindClient(app.channel(), app.registry.kind("Agent")).create(_agent(BETA, "beta's"))
    revision = written.metadata.resource_version  # it (position 0), then its default instance (1)
    with grpc.insecure_channel(server.address) as raw:
        as_beta = watch_pb2_grpc.WatchStub(with_token(raw, beta))
        as_alpha = watch_pb2_grpc.WatchStub(with_token(raw, alpha))
        assert _first_bookmark(as_beta, "AgentInstance", revision, 0) == revision - 1  # the instance follows
        assert _first_bookmark(as_alpha, "AgentInstance", revision, 0) == revision
        assert _first_bookmark(as_alpha, "Skill", revision, 0) == revision
