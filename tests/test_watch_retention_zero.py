"""Retention 0 (bytes or seconds) keeps no event past its commit, yet a watch from now sees every change.

Each commit prunes the revisions before it, those of its own batch included,
so the log alone cannot feed watches under concurrent writers: the store hands
each of its commits to the event hub (``HandsOverEvents``), and a watch that
keeps up within the hub's cache gets every change, in order, once. One that
falls behind what the cache holds is told EVENTS_COMPACTED.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from stigmer_core import Application, Conflict
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import Cursor, EventHub, StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.store.retention import EventRetention
from tests import engine_support
from tests.auth_support import served as served_on_loopback
from tests.engine_support import OpenStore

engine = engine_support.engine  # the fixture every test here takes

NONE_KEPT = {"bytes": EventRetention(max_bytes=0), "seconds": EventRetention(max_age_seconds=0)}
WRITES = 120
WRITERS = 8
WATCHES = 3
BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
ADDED = watch_pb2.WATCH_EVENT_TYPE_ADDED


@pytest.fixture(params=sorted(NONE_KEPT))
def served(request: pytest.FixtureRequest, engine: OpenStore) -> Iterator[tuple[Application, grpc.Channel]]:
    pm = plugin_manager()
    app = Application(build_registry(pm), engine(NONE_KEPT[request.param]), pm)
    try:
        workers = WATCHES + WRITERS + 4
        with served_on_loopback(app, workers) as server, grpc.insecure_channel(server.address) as channel:
            yield app, channel
    finally:
        app.close()


class _Watch:
    """A watch of agents from now, read on a thread of its own until it has ``WRITES`` additions."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.call: Any = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=120)
        self.opened = threading.Event()
        self.added: list[tuple[int, int, str]] = []
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                if event.type == BOOKMARK:
                    self.opened.set()
                elif event.type == ADDED:
                    self.added.append((event.revision, event.position, event.id))
                    if len(self.added) == WRITES:
                        break
        except grpc.RpcError as exc:
            self.failure = f"{exc.code().name}: {exc.details()}"
        finally:
            self.opened.set()
            self.call.cancel()


def test_every_watch_from_now_gets_every_change_under_concurrent_writers(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    watches = [_Watch(channel) for _ in range(WATCHES)]
    for watch in watches:
        watch.opened.wait()
        assert watch.failure is None, watch.failure

    def create(i: int) -> str:
        made: Any = agents.create(agent_pb2.Agent(metadata={"name": f"agent-{i}"}))
        return str(made.metadata.id)

    with ThreadPoolExecutor(WRITERS) as writers:
        created = set(writers.map(create, range(WRITES)))
    with app.store.read() as txn:  # every commit pruned the ones before it: the log kept nothing older
        kept = {revision for revision, _ in txn.events(0)}
    assert len(kept) <= WRITERS
    for watch in watches:
        watch.thread.join()
        assert watch.failure is None, f"{watch.failure} after {len(watch.added)} of {WRITES} events"
        assert {added for _, _, added in watch.added} == created
        order = [(revision, position) for revision, position, _ in watch.added]
        assert order == sorted(set(order))  # in log order, none twice


def test_a_reader_that_falls_behind_the_cache_is_told_compacted(engine: OpenStore) -> None:
    """What the cache holds is served even though the log pruned it; what it let go is ABORTED."""
    store = engine(EventRetention(max_age_seconds=0))
    hub = EventHub(store, StreamSettings(cache_events=8))
    try:
        hub.start()
        with store.read() as txn:
            start = txn.revision
        for i in range(20):
            event = event_pb2.ResourceEvent(kind="K", id=f"k{i}")
            store.transact(lambda txn, e=event: txn.append_event(e.SerializeToString()))
        last = Cursor(start + 20)
        sub = hub.subscribe("K")
        try:
            while not hub.read("K", last)[0]:  # the dispatcher has not reached the last commit yet
                sub.wake.wait()
                sub.wake.clear()
        finally:
            hub.unsubscribe(sub)
        page, reached = hub.read("K", Cursor.after(start + 12))
        assert [event.id for event, _ in page] == [f"k{i}" for i in range(12, 20)]
        assert reached == Cursor.after(start + 20)
        with pytest.raises(Conflict, match=r"revision \d+ compacted .*open a new watch \(from now\)") as caught:
            hub.read("K", Cursor.after(start))
        assert caught.value.reason == "EVENTS_COMPACTED"
    finally:
        hub.close()
        store.close()
