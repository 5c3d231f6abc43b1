"""One org filling the shared event log prunes its own resume points, not another org's.

Through the API on both engines: an org whose editor writes large objects
again and again (here beta) is past the log's byte bound; a watch or a
subscribe of the org that wrote little (alpha) resumes from before the flood
and gets every event of its own, while beta's resume from the same point is
told to list again. tests/test_event_fairness.py holds the store's rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.server import Server
from stigmer_core.store.retention import EventRetention
from tests.agent_execution_support import IN_PROGRESS, Kinds, details_of
from tests.auth_support import ALPHA, BETA, make_token, served, with_token

_BOUND = 40_000


@pytest.fixture
def app(tmp_path: Path, stigmer_store: str | None) -> Iterator[Application]:
    with Application.open(
        tmp_path / "data",
        durable=False,
        require_auth=True,
        store=stigmer_store,
        retention=EventRetention(max_bytes=_BOUND),
    ) as opened:
        yield opened


@pytest.fixture
def server(app: Application) -> Iterator[Server]:
    with served(app) as server:
        yield server


def _flood(kinds: Kinds, org: str, count: int, name: str = "flood") -> list[Any]:
    """Agents large enough that ``count`` of them are far past the byte bound."""
    made = []
    for i in range(count):
        agent = agent_pb2.Agent(metadata={"name": f"{name} {i}", "org": org}, spec={"description": "x" * 2_000})
        made.append(kinds.agents.create(agent))
    return made


def _objects(stream: Any, until_id: str) -> list[str]:
    seen = []
    for event in stream:
        if event.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK:
            continue
        obj = agent_pb2.Agent()
        event.object.Unpack(obj)
        seen.append(obj.metadata.id)
        if obj.metadata.id == until_id:
            return seen
    return seen


def test_a_watch_of_a_quiet_org_resumes_across_another_orgs_flood(app: Application, server: Server) -> None:
    kinds = Kinds.on(app, app.channel())
    before = kinds.agent("before", org=ALPHA)
    beta_first = _flood(kinds, BETA, 1, "first")[0]
    _flood(kinds, BETA, 40)  # 80 kB of beta's events, twice the bound
    after = kinds.agent("after", org=ALPHA)
    alpha_token, _ = make_token(app, ALPHA, "viewer")
    beta_token, _ = make_token(app, BETA, "viewer")
    since = before.metadata.resource_version - 1
    with grpc.insecure_channel(server.address) as raw:
        alpha = watch_pb2_grpc.WatchStub(with_token(raw, alpha_token))
        for org in (ALPHA, ""):  # naming the org, or across the caller's orgs (alpha alone)
            stream = alpha.Watch(watch_pb2.WatchRequest(kind="Agent", org=org, since_revision=since), timeout=20)
            assert _objects(stream, after.metadata.id) == [before.metadata.id, after.metadata.id]
            stream.cancel()
        beta = watch_pb2_grpc.WatchStub(with_token(raw, beta_token))
        request = watch_pb2.WatchRequest(kind="Agent", org=BETA, since_revision=beta_first.metadata.resource_version)
        code, text = details_of(lambda: next(beta.Watch(request, timeout=20)))
    assert code == grpc.StatusCode.ABORTED and "compacted" in text and "list again" in text
    with app.store.read() as txn:  # what alpha resumed across was pruned from the log: beta's share
        assert txn.oldest_event_revision() < before.metadata.resource_version + 2
        assert txn.compacted_through([BETA]) > beta_first.metadata.resource_version


def test_a_subscribe_in_a_quiet_org_resumes_across_another_orgs_flood(app: Application) -> None:
    kinds = Kinds.on(app, app.channel())
    agent = kinds.agent("runner", org=ALPHA)
    execution = kinds.execution("job", agent_id=agent.metadata.id, org=ALPHA)
    _flood(kinds, BETA, 40)
    moved = kinds.report(execution.metadata.id, IN_PROGRESS, "working")
    request = ae.SubscribeAgentExecutionInput(
        execution_id=execution.metadata.id, after_revision=execution.metadata.resource_version
    )
    stream = kinds.executions.call("subscribe", request, timeout=20)
    state = next(iter(stream))
    assert state.metadata.resource_version == moved.metadata.resource_version
    assert state.status.phase == IN_PROGRESS
    stream.cancel()
