"""A local daemon (LMDB, grpc's asyncio server) serves the framework's streams on its event loop:
a stream waiting for its next event holds no thread, and wakes through the loop. A plugin's own
stream still runs on the stream pool, and never sees the ``Idle`` the framework's streams yield.

Driven through real daemons on 127.0.0.1 and the event loop of the real driver.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.async_calls import _idled, wakeups_of
from stigmer_core.controller import inline_streams
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import READS_LOG, TURN, Cursor, EventHub, Idle, StreamSettings, Wake
from stigmer_core.pipeline.watch import WATCH_PATH, _Follower
from stigmer_core.plugins import plugin_manager
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store import open_store
from tests.gizmo_feed_kind import FEED_GIZMO, FeedPlugin
from tests.gizmo_kind import message
from tests.plugin_server_support import serving

WAIT = 30.0
"""How long a test waits for what must happen; never a measure of speed."""
BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
ADDED = watch_pb2.WATCH_EVENT_TYPE_ADDED


def _stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stigmer-stream")]


def _watch(channel: grpc.Channel, kind: str) -> Any:
    stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind=kind), timeout=120)
    assert next(stream).type == BOOKMARK  # open: its first message is sent
    return stream


def _added(stream: Any, count: int) -> list[str]:
    return [event.id for _, event in zip(range(count), (e for e in stream if e.type != BOOKMARK), strict=False)]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Application, grpc.Channel]]:
    with (
        Application.open(tmp_path / "data", durable=False) as app,
        serving(app, PoolSizes(read_threads=0)) as (_, channel),
    ):
        yield app, channel


def test_watches_wait_on_the_loop_and_each_gets_every_event(local: tuple[Application, grpc.Channel]) -> None:
    app, channel = local
    agents = [_watch(channel, "Agent") for _ in range(12)]
    instances = [_watch(channel, "AgentInstance") for _ in range(6)]
    try:
        assert _stream_threads() == []  # waiting for events, every one of them, with no thread
        client = KindClient(channel, app.registry.kind("Agent"))
        made = [client.create(agent_pb2.Agent(metadata={"name": f"inline {i}"})).metadata.id for i in range(3)]
        for stream in agents:
            assert _added(stream, 3) == made  # each one, in order
        for stream in instances:
            assert len(set(_added(stream, 3))) == 3  # each agent's default instance
        assert _stream_threads() == []
    finally:
        for stream in agents + instances:
            stream.cancel()


def _comes_to(read: Any, wanted: int) -> bool:
    """Whether ``read()`` comes to ``wanted`` within ``WAIT``."""
    pause = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        if read() == wanted:
            return True
        pause.wait(0.05)
    return False


def test_a_cancelled_inline_watch_lets_go_of_its_subscription(local: tuple[Application, grpc.Channel]) -> None:
    app, channel = local
    stream = _watch(channel, "Agent")
    assert _comes_to(lambda: app.events.subscribed("Agent"), 1)  # waiting for its first event
    stream.cancel()
    assert _comes_to(lambda: app.events.subscribed("Agent"), 0)


def test_only_the_framework_s_own_streams_run_inline(tmp_path: Path) -> None:
    pm = plugin_manager(entry_points=False, plugins=[FeedPlugin()])
    app = Application(build_registry(pm), open_store(tmp_path, durable=False), pm)
    try:
        inline = inline_streams(app.registry)
        assert WATCH_PATH in inline  # every kind's watch is the framework's, the plugin's kind's too
        kind = app.registry.kind(FEED_GIZMO.name)
        custom = {p for p, b in kind.methods.items() if b.server_streaming}
        assert len(custom) == 3 and not custom & inline  # a plugin's stream steps may block: never on the loop
        with serving(app, PoolSizes(read_threads=0)) as (_, channel):
            gizmos = KindClient(channel, kind)
            gizmo: Any = FEED_GIZMO.resource()
            gizmo.metadata.name = "g"
            made: Any = gizmos.create(gizmo)
            before = set(_stream_threads())
            stream = gizmos.call("follow", message("GizmoId")(value=made.metadata.id), timeout=WAIT)
            assert next(stream).metadata.id == made.metadata.id
            assert set(_stream_threads()) - before  # pulled on the stream pool
            stream.cancel()
    finally:
        app.close()


def _run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, WAIT))


def test_an_idle_wait_set_before_its_callback_was_in_place_returns_at_once() -> None:
    wake = Wake()
    wake.set()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        await _idled(Idle(wake, 3600), loop, wakeups_of(loop))

    _run(wait())  # an hour's idle, ended by the wake that came first


def test_an_idle_wait_ends_when_another_thread_wakes_it() -> None:
    wake = Wake()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        timer = threading.Timer(0.05, wake.set)
        timer.start()
        try:
            await _idled(Idle(wake, 3600), loop, wakeups_of(loop))
        finally:
            timer.cancel()
        wake.clear()
        wake.set()  # its callback was taken away: a later set touches nothing of this loop

    _run(wait())


def test_an_idle_wait_ends_at_its_seconds_unwoken() -> None:
    wake = Wake()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        await _idled(Idle(wake, 0.01), loop, wakeups_of(loop))
        assert not wake.is_set()

    _run(wait())


def test_a_wake_whose_loop_is_gone_is_still_set_and_tells_no_one() -> None:
    """The dispatcher sets every woken stream's wake from its thread: a callback that raised there
    (the loop of a stopped server closed) ended the dispatcher, and every stream with it."""
    loop = asyncio.new_event_loop()
    loop.close()
    wake = Wake()
    wake.then(lambda: loop.call_soon_threadsafe(lambda: None))
    wake.set()
    assert wake.is_set()


def test_a_stream_catching_up_reads_the_log_on_a_thread_and_gives_the_loop_turns(tmp_path: Path) -> None:
    """A watch whose kind (or labels, or filters) left out every event of a long log yielded
    nothing while it read it: served on the event loop, it held every other call of the daemon,
    health checks included, for more than a second. It says before each page it reads from the
    log (``READS_LOG``: its driver runs that step on a thread), and yields a ``TURN`` after it."""
    store = open_store(tmp_path / "data", durable=False)
    other = event_pb2.ResourceEvent(kind="Other", object=b"x").SerializeToString()
    for _ in range(40):
        store.transact(lambda txn: [txn.append_event(other, "acme") for _ in range(50)])
    hub = EventHub(store, StreamSettings(page_events=4, bookmark_seconds=0.2, poll_seconds=0.05))
    hub.start()
    try:
        for yields_idle in (True, False):
            log_pages = turns = 0
            follower = _Follower(hub, "Agent", Cursor.after(0), lambda: True, yields_idle=yields_idle)
            for item in follower:
                if item is READS_LOG:
                    log_pages += 1
                elif item is TURN:
                    turns += 1
                elif isinstance(item, Idle | Cursor):  # caught up: waiting, or a bookmark
                    break
                else:
                    raise AssertionError(f"an event of another kind was sent: {item}")
            # 2,000 events, at most 64 examined in a page: each page read on a thread, a turn after it
            pages = 2000 // 64
            assert (log_pages >= pages and turns >= pages - 1) if yields_idle else log_pages == turns == 0, (
                yields_idle,
                log_pages,
                turns,
            )
    finally:
        hub.close()
        store.close()
