"""The event log is bounded by revisions, bytes and age; pruning is bounded per commit;
a reader that is behind reads its backlog a page at a time; a pruned revision is told to re-list.

The retention tests run on both engines through one store factory (``engine``):
LMDB in the test's directory, PostgreSQL in a schema of the test's own.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, Conflict, StartupError
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import Cursor, EventHub, StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import keys
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.retention import PRUNE_PER_COMMIT, EventRetention
from tests import engine_support
from tests.agent_execution_support import details_of
from tests.engine_support import OpenStore, counted_bytes, retained

engine = engine_support.engine  # the fixture every test here takes


def test_the_log_is_bounded_by_bytes(engine: OpenStore) -> None:
    store = engine(EventRetention(max_bytes=10_000))
    for i in range(100):
        store.transact(lambda txn, i=i: txn.append_event(bytes([i]) * 500))
    kept = retained(store)
    assert sum(len(p) for _, p in kept) <= 10_000 + 500  # pruned before each append
    assert [r for r, _ in kept] == list(range(101 - len(kept), 101))  # the newest, in order
    assert counted_bytes(store) == sum(len(p) for _, p in kept)
    store.close()


def test_the_log_is_bounded_by_age(engine: OpenStore) -> None:
    store = engine(EventRetention(max_age_seconds=0))
    for i in range(5):
        store.transact(lambda txn, i=i: txn.append_event(b"x%d" % i))
    assert [r for r, _ in retained(store)] == [5]  # everything committed before now has aged out
    assert counted_bytes(store) == 2
    if isinstance(store, LmdbStore):  # the commit times of pruned revisions go with them
        with store.read() as txn:
            assert [k for k, _ in txn.scan(keys.EVENT_TIMES)] == [keys.event_time_key(5)]
    store.close()


def test_pruning_is_bounded_per_commit_and_catches_up(engine: OpenStore) -> None:
    with contextlib.closing(engine()) as store:
        total = PRUNE_PER_COMMIT * 2 + 100
        for start in range(0, total, 500):

            def many(txn: object, start: int = start) -> None:
                for _ in range(start, min(start + 500, total)):
                    txn.append_event(b"e")  # type: ignore[attr-defined]

            store.transact(many)
        before = len(retained(store))
        assert before == total
    with contextlib.closing(engine(EventRetention(max_revisions=1))) as store:
        store.transact(lambda txn: txn.append_event(b"new"))
        after_one = len(retained(store))
        # one commit did a bounded amount of work: about PRUNE_PER_COMMIT events, finishing the revision it is in
        assert after_one >= total - PRUNE_PER_COMMIT - 500 + 1
        assert after_one < total
        for _ in range(8):
            store.transact(lambda txn: txn.append_event(b"new"))
        assert len(retained(store)) == 1
        assert counted_bytes(store) == 3


# LMDB only: the byte count kept under an LMDB key, missing in an LMDB store from before it (PostgreSQL's is a column).
def test_a_store_from_before_the_byte_count_gets_one_at_open(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, durable=False) as store:
        for i in range(10):
            store.transact(lambda txn, i=i: txn.append_event(b"y" * i))
        store.transact(lambda txn: txn.delete(keys.EVENT_BYTES))
    with LmdbStore(tmp_path, durable=False) as store:
        assert counted_bytes(store) == sum(range(10))


def test_a_reader_that_is_behind_reads_one_page_at_a_time(engine: OpenStore) -> None:
    store = engine()
    hub = EventHub(store, StreamSettings(page_events=5, cache_events=4))  # no dispatcher: every read is from the log
    try:
        for i in range(40):
            kind = "Thing" if i % 2 else "Other"
            event = event_pb2.ResourceEvent(kind=kind, id=f"t{i}", revision=i + 1)
            store.transact(lambda txn, e=event: txn.append_event(e.SerializeToString()))
        cursor = Cursor.after(0)
        seen: list[str] = []
        while True:
            page, after = hub.read("Thing", cursor)
            assert len(page) <= 5
            seen += [e.id for e, _ in page]
            if after == cursor:
                break
            cursor = after
        assert seen == [f"t{i}" for i in range(1, 40, 2)]
    finally:
        hub.close()
        store.close()


def test_a_hub_read_behind_the_log_raises_compacted(engine: OpenStore) -> None:
    store = engine(EventRetention(max_revisions=3))
    hub = EventHub(store)
    for _ in range(10):
        store.transact(lambda txn: txn.append_event(event_pb2.ResourceEvent(kind="K").SerializeToString()))
    with pytest.raises(Conflict, match=r"revision 2 compacted \(oldest retained: 8\)"):
        hub.read("K", Cursor.after(2))
    page, _ = hub.read("K", Cursor.after(7))
    assert len(page) == 3
    hub.close()
    store.close()


def test_a_watch_from_a_revision_pruned_by_bytes_is_told_to_relist(engine: OpenStore) -> None:
    pm = plugin_manager()
    store = engine(EventRetention(max_bytes=4_000))
    with Application(build_registry(pm), store, pm) as app:
        channel = app.channel()
        agents = KindClient(channel, app.registry.kind("Agent"))
        first = agents.create(agent_pb2.Agent(metadata={"name": "first"}))
        for i in range(20):
            agents.create(agent_pb2.Agent(metadata={"name": f"filler-{i}"}, spec={"description": "x" * 200}))
        watch = watch_pb2_grpc.WatchStub(channel).Watch
        code, text = details_of(
            lambda: next(watch(watch_pb2.WatchRequest(kind="Agent", since_revision=first.metadata.resource_version)))
        )
        assert code == grpc.StatusCode.ABORTED
        assert f"revision {first.metadata.resource_version} compacted (oldest retained:" in text
        assert "list again" in text
        with store.read() as txn:
            oldest = txn.oldest_event_revision()
        stream = watch(watch_pb2.WatchRequest(kind="Agent", since_revision=oldest - 1))
        assert next(stream).type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
        assert next(stream).revision == oldest


def test_settings_come_from_the_environment_and_bad_values_stop_startup(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_BYTES", "5000")
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_SECONDS", "60")
    monkeypatch.setenv("STIGMER_MAX_STREAMS", "7")
    monkeypatch.setenv("STIGMER_WATCH_BOOKMARK_SECONDS", "2.5")
    monkeypatch.setenv("STIGMER_MAX_STREAMS_PER_CALLER", "3")
    assert EventRetention.from_env() == EventRetention(max_bytes=5000, max_age_seconds=60)
    with Application.open(tmp_path, durable=False, store=stigmer_store) as app:
        assert app.stream_limit.limit == 7 and app.events.settings.bookmark_seconds == 2.5
        assert app.stream_limit.per_caller == 3
    monkeypatch.setenv("STIGMER_MAX_STREAMS_PER_CALLER", "0")
    with pytest.raises(StartupError, match="STIGMER_MAX_STREAMS_PER_CALLER must be 1 or more"):
        StreamSettings.from_env()
    monkeypatch.setenv("STIGMER_MAX_STREAMS_PER_CALLER", "2.5")
    with pytest.raises(StartupError, match=r"STIGMER_MAX_STREAMS_PER_CALLER='2\.5' is not a whole number"):
        StreamSettings.from_env()
    monkeypatch.setenv("STIGMER_MAX_STREAMS_PER_CALLER", "3")
    monkeypatch.setenv("STIGMER_MAX_STREAMS", "-1")
    with pytest.raises(StartupError, match="STIGMER_MAX_STREAMS must be 1 or more, not -1"):
        StreamSettings.from_env()
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_REVISIONS", "lots")
    with pytest.raises(StartupError, match="STIGMER_EVENT_RETENTION_REVISIONS"):
        EventRetention.from_env()


def test_a_resume_inside_a_pruned_revision_is_told_to_relist(engine: OpenStore) -> None:
    """A cascade's revision pruned after the client had its first event: the resume answered OK and
    the rest of the cascade never arrived (a gap), once the oldest kept revision was the next one."""
    from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2

    pm = plugin_manager()
    store = engine(EventRetention(max_revisions=3))
    with Application(build_registry(pm), store, pm) as app:
        channel = app.channel()
        agents = KindClient(channel, app.registry.kind("Agent"))
        instances = KindClient(channel, app.registry.kind("AgentInstance"))
        owner = agents.create(agent_pb2.Agent(metadata={"name": "owner"}))
        for i in range(2):
            instances.create(
                agentinstance_pb2.AgentInstance(metadata={"name": f"i{i}"}, spec={"agent_id": owner.metadata.id})
            )
        agents.delete(owner.metadata.id)  # one revision: the three instances' DELETED, then the agent's
        with store.read() as txn:
            cascade = txn.revision
        for i in range(3):  # the cascade's revision leaves the log; the next one is the oldest kept
            agents.create(agent_pb2.Agent(metadata={"name": f"filler-{i}"}))
        with store.read() as txn:
            assert txn.oldest_event_revision() == cascade + 1
        watch = watch_pb2_grpc.WatchStub(channel).Watch
        request = watch_pb2.WatchRequest(kind="AgentInstance", since_revision=cascade, since_position=0)
        code, text = details_of(lambda: next(watch(request)))
        assert code == grpc.StatusCode.ABORTED and f"revision {cascade} compacted" in text


def test_a_subscribe_resumed_from_a_pruned_revision_follows_an_object_unchanged_since(engine: OpenStore) -> None:
    """The compaction advice (get the object, resume from its resource_version) was refused again
    for an object nobody had written since: the pruned events held nothing of it."""
    from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
    from tests.agent_execution_support import COMPLETED, IN_PROGRESS, Kinds

    pm = plugin_manager()
    store = engine(EventRetention(max_revisions=3))
    with Application(build_registry(pm), store, pm) as app:
        kinds = Kinds.on(app, app.channel())
        agent = kinds.agent()
        idle = kinds.execution("idle", agent_id=agent.metadata.id)
        done = kinds.execution("done", agent_id=agent.metadata.id)
        kinds.report(done.metadata.id, IN_PROGRESS)
        done = kinds.report(done.metadata.id, COMPLETED, "finished")
        changed = kinds.execution("changed", agent_id=agent.metadata.id)
        kinds.report(changed.metadata.id, IN_PROGRESS, "moved on")
        for i in range(4):
            kinds.agent(f"filler {i}")
        with store.read() as txn:
            assert txn.oldest_event_revision() > done.metadata.resource_version + 1

        def subscribe(execution: Any, timeout: float = 20) -> Any:
            request = ae.SubscribeAgentExecutionInput(
                execution_id=execution.metadata.id, after_revision=execution.metadata.resource_version
            )
            return kinds.executions.call("subscribe", request, timeout=timeout)

        assert list(subscribe(done)) == []  # resumed at its final state: nothing more will come
        code, _ = details_of(lambda: next(subscribe(idle, timeout=0.5)))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED  # followed, waiting for its next state
        # written after the resume point, in pruned revisions: its states are lost, so refused
        code, text = details_of(lambda: next(subscribe(changed)))
        assert code == grpc.StatusCode.ABORTED and "compacted" in text


# LMDB only: the totals carried from commit to commit are LmdbStore's, read from its keys (a PostgreSQL commit
# reads them from the meta row it locks).
def test_the_log_totals_a_commit_carries_to_the_next_stay_those_of_the_log(tmp_path: Path) -> None:
    """A commit starts from the totals the last one left (not read again): writes with and
    without events, a refused one and pruning ones still leave the stored totals exact."""

    def stored_and_actual(store: LmdbStore) -> tuple[tuple[int, int], tuple[int, int]]:
        with store.read() as txn:
            events = list(txn.scan(keys.EVENTS))
            held = int.from_bytes(txn.get(keys.EVENT_REVISIONS) or b"", "big")
        revisions = len({keys.event_revision(key) for key, _ in events})
        return (counted_bytes(store), held), (sum(len(value) for _, value in events), revisions)

    def refused(txn: Any) -> None:
        txn.append_event(b"never")
        raise Conflict("refused")

    retention = EventRetention(max_revisions=5)
    with LmdbStore(tmp_path, durable=False, retention=retention) as store:
        for i in range(12):
            store.transact(lambda txn, i=i: txn.append_event(b"e" * (i + 1)))
            store.transact(lambda txn, i=i: txn.put(b"plain/%d" % i, b"x"))
            with pytest.raises(Conflict):
                store.transact(refused)
            stored, actual = stored_and_actual(store)
            assert stored == actual
    with LmdbStore(tmp_path, durable=False, retention=retention) as store:
        store.transact(lambda txn: txn.append_event(b"after reopening"))
        stored, actual = stored_and_actual(store)
        assert stored == actual and actual[1] == 5
