"""A daemon's connection pool under load: streams catching up take turns at half of it, so unary
calls keep answering; a call that waits out a busy pool is told the pool is busy, and only one
whose pool cannot open connections is told the database is unreachable."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from stigmer_core import errors
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.application import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.pipeline.turns import Place
from stigmer_core.server import Server
from stigmer_core.store import postgres_faults, postgres_store
from stigmer_core.store.postgres_store import PostgresStore
from tests.test_postgres_store import _daemon_role

BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
ADDED = watch_pb2.WATCH_EVENT_TYPE_ADDED
WATCHES = 40
AGENTS = 30
TIMEOUT = 120.0


def _with(url: str, **params: object) -> str:
    return url + "".join(f"&{name}={value}" for name, value in params.items())


@contextlib.contextmanager
def _held(store: PostgresStore, count: int) -> Iterator[None]:
    """``count`` of the store's connections lent out (each to a read left open)."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(store.read())
        yield


def test_a_call_that_waits_out_a_busy_pool_is_told_the_pool_is_busy(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    url = _with(stigmer_postgres_store_url, pool_min=2, pool_max=2, pool_timeout=0.5)
    app = Application.open(tmp_path / "data", durable=False, store=url)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        agents = KindClient(channel, app.registry.kind("Agent"))
        created = agents.create(agent_pb2.Agent(metadata={"name": "busy"}))
        store = app.store
        assert isinstance(store, PostgresStore)
        with _held(store, 2), pytest.raises(grpc.RpcError) as caught:
            agents.get(created.metadata.id)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        details = caught.value.details() or ""
        assert "pool_max" in details and "pool_timeout" in details and "busy" in details, details
        assert "unreachable" not in details, details
        assert agents.get(created.metadata.id).metadata.id == created.metadata.id, "free again: answered"
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def test_a_pool_that_cannot_open_a_connection_says_the_database_is_unreachable(
    stigmer_postgres_store_url: str,
) -> None:
    with _daemon_role(stigmer_postgres_store_url) as (url, admin, role):
        store = PostgresStore(_with(url, pool_min=1, pool_max=8, pool_timeout=1), durable=False)
        try:
            with store.read() as txn:  # the pool opened: more are opened on demand
                assert txn.revision >= 0
            with contextlib.ExitStack() as held:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0'.encode())
                # The connections the pool opened (or was still opening: it grows in the background,
                # and one may have got in before the limit) are lent out one by one; then the next
                # read needs a new one, which the database refuses. Far below pool_max, so the
                # pool is not merely busy.
                with pytest.raises(errors.Unavailable) as caught:
                    for _ in range(8):
                        held.enter_context(store.read())
            # not "busy: give it a larger pool_max": the database refuses connections, and says why
            said = caught.value.message
            assert "refuses this daemon more connections" in said and "larger pool_max" not in said, said
            assert "too many connections" in said and "lower pool_max" in said, "the reason opening failed"
        finally:
            store.close()


def test_a_start_the_database_refuses_for_its_connection_limit_says_what_to_change(
    stigmer_postgres_store_url: str,
) -> None:
    """An operator's database at its connection limit was told only libpq's words ("remaining
    connection slots are reserved", "too many connections for role"), with no word of the pools."""
    with _daemon_role(stigmer_postgres_store_url) as (url, admin, role):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0'.encode())
        with pytest.raises(errors.DatabaseUnreachable) as caught:
            PostgresStore(url, durable=False).close()
        said = caught.value.message
        assert "too many connections" in said and "lower pool_max" in said and "CONNECTION LIMIT" in said, said


def test_a_role_limit_below_the_pool_is_said_at_start_and_by_the_calls_it_starves(
    stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role allowed fewer connections than the pool wants: the start said nothing, and the calls
    that found no connection were told the database was unreachable, though it answered."""
    with _daemon_role(stigmer_postgres_store_url) as (url, admin, role):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 2'.encode())
        with caplog.at_level(logging.WARNING, logger="stigmer_core.store.postgres_store"):
            store = PostgresStore(_with(url, pool_min=1, pool_max=4, pool_timeout=1), durable=False)
        try:
            assert "more than the 2 the role of" in caplog.text and "CONNECTION LIMIT" in caplog.text, caplog.text
            with contextlib.ExitStack() as held, pytest.raises(errors.Unavailable) as caught:
                for _ in range(4):  # the listener holds one of the two: the second read finds none
                    held.enter_context(store.read()).revision  # noqa: B018 - a read that takes a connection
            said = caught.value.message
            assert "refuses this daemon more connections" in said and "lower pool_max" in said, said
        finally:
            store.close()


def _lock_waiters(admin: psycopg.Connection[Any]) -> int:
    """Backends of the daemon's role (the admin's too) waiting for a lock: reads of the locked log."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def _catch_up(stream: Any, count: int) -> str:
    """Read ``stream`` until ``count`` Agents were ADDED: how it ended."""
    seen = 0
    try:
        for event in stream:
            seen += event.type == ADDED
            if seen == count:
                return "caught up"
        return f"ended after {seen}"
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    finally:
        stream.cancel()


def test_many_streams_catching_up_on_a_tiny_pool_leave_unary_calls_answering(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """Two connections, many watches reading the log from the start while it answers nothing (an
    exclusive lock held on it): one stream's read holds one connection, the rest wait their turn
    without failing, and gets keep the other connection. Then every stream catches up."""
    url = _with(stigmer_postgres_store_url, pool_min=2, pool_max=2, pool_timeout=1)
    app = Application.open(tmp_path / "data", durable=False, store=url, streams=StreamSettings(page_events=8))
    server = Server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    channels = [grpc.insecure_channel(server.address) for _ in range(4)]
    store = app.store
    assert isinstance(store, PostgresStore)
    try:
        agents = KindClient(channels[0], app.registry.kind("Agent"))
        made = [agents.create(agent_pb2.Agent(metadata={"name": f"a{i}"})) for i in range(AGENTS)]
        with (
            psycopg.connect(store.settings.conninfo, autocommit=True) as admin,
            psycopg.connect(store.settings.conninfo) as locker,
        ):
            locker.execute(f'LOCK TABLE "{store.schema}".events IN ACCESS EXCLUSIVE MODE'.encode())
            streams = [
                watch_pb2_grpc.WatchStub(channels[i % 4]).Watch(
                    watch_pb2.WatchRequest(kind="Agent", since_revision=0), timeout=TIMEOUT
                )
                for i in range(WATCHES)
            ]
            for stream in streams:  # sent before any of them reads the log
                assert next(stream).type == BOOKMARK
            for _ in range(600):
                if _lock_waiters(admin):
                    break
                threading.Event().wait(0.05)
            for made_one in made[:10]:
                assert agents.get(made_one.metadata.id).metadata.id == made_one.metadata.id
            assert _lock_waiters(admin) == store.stream_read_slots == 1, "one connection for streams' reads"
            locker.rollback()
        with ThreadPoolExecutor(WATCHES) as readers:
            ends = list(readers.map(lambda stream: _catch_up(stream, AGENTS), streams))
        assert [end for end in ends if end != "caught up"] == [], "no stream ends UNAVAILABLE"
    finally:
        for channel in channels:
            channel.close()
        server.stop(grace=1)
        app.close()


def test_a_stream_waiting_for_its_turn_at_the_log_has_sent_its_first_bookmark(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """The first BOOKMARK goes out before the stream reads the log: a turn it waits for (here,
    every turn taken) does not hold it back, and the caller going away ends the wait."""
    url = _with(stigmer_postgres_store_url, pool_min=2, pool_max=2, pool_timeout=1)
    app = Application.open(tmp_path / "data", durable=False, store=url)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    turns = app.events.log_turns
    assert turns is not None and turns.slots == 1
    try:
        agents = KindClient(channel, app.registry.kind("Agent"))
        created = agents.create(agent_pb2.Agent(metadata={"name": "first"}))
        mine = Place()
        assert turns.take(mine, lambda: True)  # the only turn, held: no stream can read the log now
        try:
            stream = watch_pb2_grpc.WatchStub(channel).Watch(
                watch_pb2.WatchRequest(kind="Agent", since_revision=0), timeout=TIMEOUT
            )
            first = next(stream)
            assert first.type == BOOKMARK and first.revision == 0
            waited = threading.Event()
            for _ in range(200):
                if turns.waiting:
                    waited.set()
                    break
                threading.Event().wait(0.05)
            assert waited.is_set(), "the stream waits its turn to read the log"
            assert agents.get(created.metadata.id).metadata.name == "first", "unary calls still answer"
        finally:
            turns.give(mine)
        event = next(stream)
        assert event.type == ADDED and event.object.Is(agent_pb2.Agent.DESCRIPTOR)
        stream.cancel()
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def test_a_token_checked_while_the_pool_is_busy_is_answered_unavailable_not_unknown(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A team server checks a call's token before its message is read; a token not in the cache is
    read from the store, and the store's UNAVAILABLE (a pool that stayed busy, a database that is
    down) escaped that check: grpc answered UNKNOWN, which no retry policy retries."""
    from tests.auth_support import ALPHA, make_token

    url = _with(stigmer_postgres_store_url, pool_min=2, pool_max=2, pool_timeout=0.5)
    app = Application.open(tmp_path / "data", durable=False, store=url, require_auth=True)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        assert not server.asynchronous
        token, _ = make_token(app, ALPHA, "editor")
        agents = agent_grpc.AgentQueryControllerStub(channel)
        bearer = (("authorization", f"Bearer {token}"),)
        store = app.store
        assert isinstance(store, PostgresStore)
        listing = agent_pb2.ListAgentsRequest(org=ALPHA)
        with _held(store, 2), pytest.raises(grpc.RpcError) as caught:
            agents.list(listing, metadata=bearer, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert "busy" in (caught.value.details() or "")
        assert list(agents.list(listing, metadata=bearer, timeout=TIMEOUT).entries) == [], "free again: answered"
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def test_psycopgs_warnings_alike_are_written_once_a_minute_with_a_count() -> None:
    """One line per dropped connection buried the daemon's own lines when a database restarted
    under load; alike ones (logger and message template) fold, and the next says how many."""
    now = [0.0]
    folded = postgres_faults.FoldedWarnings(60, clock=lambda: now[0])

    def warned(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, message, args, None)

    broken = "discarding broken connection: %s"
    first = warned(broken, "<conn 1>")
    assert folded.filter(first) and first.getMessage() == "discarding broken connection: <conn 1>"
    assert not any(folded.filter(warned(broken, f"<conn {i}>")) for i in range(2, 40))
    other = warned("error connecting in %r: %s", "stigmer", "connection refused")
    assert folded.filter(other), "another kind of warning is not folded into the first"
    now[0] = 60.0
    after = warned(broken, "<conn 40>")
    assert folded.filter(after)
    assert after.getMessage() == "discarding broken connection: <conn 40> (and 38 more like it in the last 60 s)"
    now[0] = 200.0
    quiet = warned(broken, "<conn 41>")
    assert folded.filter(quiet) and quiet.getMessage() == "discarding broken connection: <conn 41>"
    hinted = warned("error connecting in %r: %s", "stigmer", 'connection failed: refused\n\tIs the server running?\n')
    assert folded.filter(hinted)  # libpq's hint had a line of its own in the daemon's log
    assert hinted.getMessage() == "error connecting in 'stigmer': connection failed: refused Is the server running?"
    debug = [logging.LogRecord("psycopg.pool", logging.DEBUG, __file__, 1, "connection given", (), None)] * 3
    assert all(folded.filter(record) for record in debug), "-v asked for every debug line"


def test_connections_terminated_again_and_again_leave_one_warning(
    tmp_path: Path, stigmer_postgres_store_url: str, caplog: Any
) -> None:
    """An administrator terminating the daemon's backends over and over (or a database restarting):
    every write still lands, and psycopg's pool said so once, not once per connection."""
    name = f"stigmer-fold-{tmp_path.name}"[:60]
    postgres_faults.FOLDED.reset()  # this test's count only
    with (
        caplog.at_level(logging.WARNING, logger="psycopg"),
        PostgresStore(_with(stigmer_postgres_store_url, application_name=name), durable=False) as store,
        psycopg.connect(store.settings.conninfo, autocommit=True, application_name="fold-admin") as admin,
    ):
        for i in range(8):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,))
            deadline = time.monotonic() + TIMEOUT / 4
            while True:  # a write that met a terminated connection is refused (the listener's too: NOT_SERVING
                try:  # until it reconnects, within a second), then lands
                    store.transact(lambda txn, i=i: txn.put(b"k/%d" % i, b"1"))
                    break
                except errors.Unavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        with store.read() as txn:
            assert [txn.get(b"k/%d" % i) for i in range(8)] == [b"1"] * 8
    dropped = [r for r in caplog.records if r.name == "psycopg.pool" and "discarding broken" in str(r.msg)]
    assert len(dropped) == 1, [r.getMessage() for r in dropped]


def test_a_pool_larger_than_the_database_allows_is_said_at_start(
    stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool_max past the server's max_connections opened connections until the server refused
    them, and the log held only the driver's refusals, one after another, never why."""
    with psycopg.connect(stigmer_postgres_store_url.split("?")[0], autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('max_connections')::int").fetchone()
    assert row is not None
    allowed = int(row[0])
    caplog.set_level(logging.WARNING, logger="stigmer_core.store.postgres_store")
    with PostgresStore(_with(stigmer_postgres_store_url, pool_max=allowed + 10), durable=False):
        said = [r.getMessage() for r in caplog.records if "pool_max" in r.getMessage()]
    assert len(said) == 1, said
    assert f"pool_max {allowed + 10} and the listener need {allowed + 11} connections" in said[0], said
    assert f"max_connections {allowed}" in said[0], said
    caplog.clear()
    with PostgresStore(stigmer_postgres_store_url, durable=False):  # the default 16 fits
        assert not [r for r in caplog.records if "pool_max" in r.getMessage()]


def test_the_pools_connections_cut_with_the_listeners_are_replaced_before_a_call_meets_them(
    stigmer_postgres_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart or a cut path kills every connection of the daemon: the pool counted
    the dead ones open (``stigmer_database_connections``) until a call met each. The listener's
    reconnect now has the pool test its idle ones, so they are replaced before any call. The
    listener's own read through the pool after a quiet spell is put past the test's wait, so
    it cannot be what finds them."""
    monkeypatch.setattr(postgres_store, "LISTEN_SECONDS", TIMEOUT)
    name = f"stigmer-check-{tmp_path.name}"[:60]
    url = _with(stigmer_postgres_store_url, application_name=name, pool_min=3, pool_max=3)
    with (
        PostgresStore(url, durable=False) as store,
        psycopg.connect(store.settings.conninfo, autocommit=True, application_name="check-admin") as admin,
    ):

        def live() -> set[int]:
            rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchall()
            return {int(pid) for (pid,) in rows}

        deadline = time.monotonic() + TIMEOUT / 4
        while len(before := live()) < 4 and time.monotonic() < deadline:  # the pool's three and the listener
            time.sleep(0.05)
        assert len(before) == 4 and store.pool_stats().size == 3
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,))
        while not (len(after := live()) == 4 and not after & before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(after) == 4 and not after & before, (before, after)
        assert store.pool_stats().size == 3
