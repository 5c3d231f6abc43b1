"""Watch across replicas: two daemons on one PostgreSQL schema, a watch on one, writes on the other."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from tests.agent_execution_support import IN_PROGRESS, Kinds
from tests.test_replicas import Replica

ADDED = watch_pb2.WATCH_EVENT_TYPE_ADDED
MODIFIED = watch_pb2.WATCH_EVENT_TYPE_MODIFIED
DELETED = watch_pb2.WATCH_EVENT_TYPE_DELETED
BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
TIMEOUT = 30.0


@pytest.fixture
def daemons(tmp_path: Path, stigmer_postgres_store_url: str) -> Iterator[tuple[Replica, Replica]]:
    a = Replica(tmp_path / "a", stigmer_postgres_store_url)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
    b = Replica(tmp_path / "b", stigmer_postgres_store_url)
    yield a, b
    b.close()
    a.close()


def _watch(replica: Replica, kind: str, **fields: Any) -> Any:
    stub = watch_pb2_grpc.WatchStub(replica.channel)
    return stub.Watch(watch_pb2.WatchRequest(kind=kind, **fields), timeout=TIMEOUT)


def _opened(stream: Any) -> int:
    first = next(stream)
    assert first.type == BOOKMARK
    return int(first.revision)


def _events(stream: Any, count: int) -> list[watch_pb2.WatchEvent]:
    found: list[watch_pb2.WatchEvent] = []
    for event in stream:
        if event.type != BOOKMARK:
            found.append(event)
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} events")


def _agents(replica: Replica) -> KindClient:
    return KindClient(replica.channel, replica.app.registry.kind("Agent"))


def test_a_watch_on_one_daemon_sees_the_others_writes_in_order_across_a_reconnect(
    daemons: tuple[Replica, Replica],
) -> None:
    a, b = daemons
    on_a, on_b = _agents(a), _agents(b)
    stream = _watch(a, "Agent")
    start = _opened(stream)
    written: list[tuple[int, int, str]] = []  # (revision, event type, id) of every write, in any order
    lock = threading.Lock()

    def record(kind: int, obj: Any) -> None:
        with lock:
            written.append((obj.metadata.resource_version, kind, obj.metadata.id))

    first = [on_b.create(agent_pb2.Agent(metadata={"name": f"first-{i}"})) for i in range(6)]
    for agent in first:
        record(ADDED, agent)
    received = _events(stream, 4)
    stream.cancel()  # cut off in the middle of what was written

    failures: list[BaseException] = []

    def writer(client: KindClient, name: str) -> None:
        try:
            write(client, name)
        except BaseException as exc:  # a writer's error fails the test, not only its thread
            failures.append(exc)

    def write(client: KindClient, name: str) -> None:
        for i in range(8):
            created = client.create(agent_pb2.Agent(metadata={"name": f"{name}-{i}"}))
            record(ADDED, created)
            if i % 3 == 0:
                changed = agent_pb2.Agent()
                changed.CopyFrom(created)
                changed.spec.description = "changed"
                record(MODIFIED, client.update(changed))

    # both daemons write at once while the watcher is away, so revisions interleave across them
    threads = [threading.Thread(target=writer, args=(c, n)) for c, n in ((on_a, "a"), (on_b, "b"), (on_b, "b2"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert failures == []
    assert len(written) == 6 + 3 * (8 + 3)
    deleted = on_b.delete(first[0].metadata.id)
    with lock:
        written.append((0, DELETED, deleted.metadata.id))  # a delete's revision is the event's

    resumed = _watch(a, "Agent", since_revision=received[-1].revision)
    assert _opened(resumed) == received[-1].revision
    rest = _events(resumed, len(written) - len(received))
    resumed.cancel()
    whole = received + rest
    revisions = [e.revision for e in whole]
    assert revisions == sorted(set(revisions)), "in revision order, none twice"
    assert revisions[0] > start
    expected = [*sorted(written[:-1]), (whole[-1].revision, DELETED, deleted.metadata.id)]
    assert [(e.revision, e.type, e.id) for e in whole] == expected
    assert whole[-1].revision > expected[-2][0]


def test_two_runners_on_two_daemons_claim_each_execution_once(daemons: tuple[Replica, Replica]) -> None:
    """Each runner watches PENDING executions on its own daemon and claims with a version-guarded updateStatus."""
    a, b = daemons
    kinds = {name: Kinds.on(replica.app, replica.channel) for name, replica in (("a", a), ("b", b))}
    agent = kinds["a"].agents.create(agent_pb2.Agent(metadata={"name": "worker"}))
    count = 12
    claims: dict[str, list[str]] = {}
    losses: list[grpc.StatusCode] = []
    lock = threading.Lock()
    ready = threading.Barrier(3)

    def runner(name: str, replica: Replica) -> None:
        stream = _watch(replica, "AgentExecution", filters={"phase": "EXECUTION_PENDING"})
        _opened(stream)
        ready.wait(TIMEOUT)
        added = (event for event in stream if event.type == ADDED)
        for event in itertools.islice(added, count):
            claim = ae.AgentExecutionUpdateStatusInput(
                execution_id=event.id, resource_version=event.revision, status={"phase": IN_PROGRESS}
            )
            try:
                kinds[name].executions.call("updateStatus", claim)
            except grpc.RpcError as exc:
                with lock:
                    losses.append(exc.code())
            else:
                with lock:
                    claims.setdefault(event.id, []).append(name)
        stream.cancel()

    threads = [threading.Thread(target=runner, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    ready.wait(TIMEOUT)
    # executions are created on both daemons, so each runner learns of half of them from the other one
    made = [kinds["ab"[i % 2]].execution(f"job-{i}", agent_id=agent.metadata.id) for i in range(count)]
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert sorted(claims) == sorted(e.metadata.id for e in made)
    assert all(len(who) == 1 for who in claims.values()), claims
    assert losses == [grpc.StatusCode.ABORTED] * count  # the other runner's try, every time
    assert {kinds["b"].executions.get(e.metadata.id).status.phase for e in made} == {IN_PROGRESS}
