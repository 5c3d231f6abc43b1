"""A lock on the store's tables that stops its calls is health's to report, naming who holds it.

``LOCK TABLE stigmer.kv`` (or a ``VACUUM FULL``, an ``ALTER TABLE``, a ``CREATE INDEX`` without
``CONCURRENTLY`` against the schema) left every call that needed the table waiting out
``statement_timeout_ms`` (30 s) while health stayed SERVING: the listener's reads touched
neither table. Its quiet-spell read now asks for the lock a write takes on them, and a lock it
cannot have turns health NOT_SERVING, calls refused UNAVAILABLE at once saying why, until the
lock is released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from stigmer_core import errors
from stigmer_core.store import WriteTxn, postgres_store
from stigmer_core.store.postgres_settings import PostgresSettings
from stigmer_core.store.postgres_store import PostgresStore

WAIT = 30.0
"""How long a test waits for what must come; never a measure of speed."""


class Told:
    """What the store told its health followers, in order."""

    def __init__(self) -> None:
        self.states: list[bool] = []
        self._changed = threading.Condition()

    def __call__(self, serving: bool) -> None:
        with self._changed:
            self.states.append(serving)
            self._changed.notify_all()

    def wait_for(self, states: list[bool]) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.states == states, WAIT), self.states


@pytest.fixture
def store(stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresStore]:
    monkeypatch.setattr(postgres_store, "LISTEN_SECONDS", 0.2)  # the quiet spell after which it looks
    with PostgresStore(f"{stigmer_postgres_store_url}&health_timeout_ms=1000", durable=False) as opened:
        opened.transact(lambda txn: txn.put(b"o/k", b"v"))
        yield opened


def _holding(store: PostgresStore, statement: str) -> Callable[[], None]:
    """Another session holding ``statement``'s lock until what is returned is called."""
    other = psycopg.connect(PostgresSettings.from_url(store.url).conninfo, autocommit=True)
    other.execute(b"BEGIN")
    other.execute(statement.format(s=f'"{store.schema}"').encode())

    def release() -> None:
        other.execute(b"ROLLBACK")
        other.close()

    return release


def _writer(store: PostgresStore) -> tuple[threading.Thread, list[BaseException]]:
    """A thread that makes one write (``_write``) once started, and the list that gets what it raised."""
    waiting: list[BaseException] = []
    return threading.Thread(target=lambda: _caught(lambda: store.transact(_write), waiting)), waiting


def _write(txn: WriteTxn) -> int:
    """A write as a create makes one: an object and its event (``kv``, ``meta``, ``events``,
    ``event_parts``)."""
    txn.put(b"o/k", b"w")
    return txn.append_event(b"ev")


@pytest.mark.parametrize(
    ("statement", "mode"),
    [
        ("LOCK TABLE {s}.kv IN ACCESS EXCLUSIVE MODE", "AccessExclusiveLock"),  # reads and writes wait
        ("LOCK TABLE {s}.events IN SHARE MODE", "ShareLock"),  # writes wait (a CREATE INDEX's)
        ("LOCK TABLE {s}.event_parts IN ACCESS EXCLUSIVE MODE", "AccessExclusiveLock"),  # every write's event
        ("LOCK TABLE {s}.meta IN ACCESS EXCLUSIVE MODE", "AccessExclusiveLock"),  # the revision: told "does not answer"
    ],
    ids=["kv", "events-share", "event-parts", "meta"],
)
def test_a_lock_on_the_stores_tables_is_reported_until_it_is_released(
    store: PostgresStore, statement: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    told = Told()
    store.on_reachability(told)
    release = _holding(store, statement)
    writer, waiting = _writer(store)
    try:
        writer.start()  # waits on the lock: given up once it is found, saying why
        told.wait_for([False])
        said = caplog.text
        assert f"a table of schema '{store.schema}' is locked by another session" in said, said
        assert mode in said and "reports NOT_SERVING until it is released" in said, said
        writer.join(WAIT)
        assert len(waiting) == 1 and isinstance(waiting[0], errors.Unavailable), waiting
        assert "is locked by another session" in str(waiting[0]), waiting[0]
        with pytest.raises(errors.Unavailable, match="is locked by another session") as refused:
            store.transact(_write)
        assert "calls are refused until it is released" in str(refused.value)
        for told_caller in (str(waiting[0]), str(refused.value)):  # who holds it is the log's alone
            assert "pid" not in told_caller and "user" not in told_caller and "LOCK" not in told_caller
    finally:
        release()
        writer.join(WAIT)
    told.wait_for([False, True])
    assert "the store's tables are free again" in caplog.text
    store.transact(_write)
    with store.read() as txn:
        assert txn.get(b"o/k") == b"w"


def _caught(call: Callable[[], object], into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        into.append(exc)


def test_a_lock_held_for_a_moment_is_waited_for_not_reported(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A vacuum truncating a table's end takes its lock for milliseconds: the probe waits up to
    a quarter of health_timeout_ms for the lock, so such a moment never turns health NOT_SERVING."""
    told = Told()
    store.on_reachability(told)
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        release = _holding(store, "LOCK TABLE {s}.kv IN ACCESS EXCLUSIVE MODE")
        threading.Event().wait(0.05)  # well inside the probe's wait: a quarter of the 1 s health bound
        release()
        threading.Event().wait(0.3)  # past the quiet spell: the listener looked meanwhile
    assert told.states == [] and "is locked by another session" not in caplog.text


def test_a_lock_is_found_when_every_pooled_connection_waits_on_it(
    stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With every pooled connection lent to calls the lock held, the quiet spell's read went on the
    listener's own connection without looking for the lock, and health stayed SERVING."""
    monkeypatch.setattr(postgres_store, "LISTEN_SECONDS", 0.2)
    url = f"{stigmer_postgres_store_url}&pool_min=1&pool_max=1&health_timeout_ms=1000"
    with PostgresStore(url, durable=False) as store:
        store.transact(_write)
        told = Told()
        store.on_reachability(told)
        release = _holding(store, "LOCK TABLE {s}.kv IN ACCESS EXCLUSIVE MODE")
        writer, _ = _writer(store)
        try:
            writer.start()  # holds the pool's one connection, waiting on the lock
            told.wait_for([False])
            assert "kv locked (AccessExclusiveLock)" in caplog.text, caplog.text
        finally:
            release()
            writer.join(WAIT)
        told.wait_for([False, True])


def test_a_lock_waiting_behind_a_long_read_names_both(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A long read of ``meta`` ahead of a queued ``ALTER TABLE`` holds every write behind both; the
    log named no one, as only granted locks were listed."""
    told = Told()
    store.on_reachability(told)
    reading = _holding(store, "SELECT * FROM {s}.meta")
    other = psycopg.connect(PostgresSettings.from_url(store.url).conninfo, autocommit=True)
    other.execute(b"BEGIN")  # LOCK TABLE is refused outside a transaction
    queued = threading.Thread(
        target=lambda: _caught(
            lambda: other.execute(f'LOCK TABLE "{store.schema}".meta IN ACCESS EXCLUSIVE MODE'.encode()), []
        )
    )
    try:
        queued.start()
        told.wait_for([False])
        assert "waits for AccessExclusiveLock behind pid" in caplog.text, caplog.text
    finally:
        reading()
        queued.join(WAIT)
        other.close()
    told.wait_for([False, True])


@pytest.mark.parametrize(
    "statements",
    [
        ["SELECT * FROM {s}.meta FOR UPDATE"],
        ["UPDATE {s}.meta SET writes = writes"],
        # psql's ON_ERROR_ROLLBACK runs each statement in a savepoint: the row's xmax is then the
        # subtransaction's, which no granted lock names
        ["SAVEPOINT s; SELECT * FROM {s}.meta FOR UPDATE; RELEASE SAVEPOINT s"],
        # two sessions sharing the row's lock: its xmax is a multixact, which no lock names either
        ["SELECT * FROM {s}.meta FOR SHARE", "SELECT * FROM {s}.meta FOR SHARE"],
        # the row of the object the write puts: the write waits there holding meta's row, and
        # every other write of every daemon waits behind it
        ["SELECT * FROM {s}.kv WHERE key = 'o/k'::bytea FOR UPDATE"],
    ],
    ids=["select-for-update", "update", "savepoint", "two-sharing", "object-row"],
)
def test_a_forgotten_session_holding_a_row_writes_wait_for_is_reported(
    store: PostgresStore, statements: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every write locks ``meta``'s one row, and an object's write its rows: a session that locked
    one and left its transaction open held every write of every daemon for ``statement_timeout_ms``
    each, while health stayed SERVING."""
    told = Told()
    store.on_reachability(told)
    releases = [_holding(store, statement) for statement in statements]
    writer, waiting = _writer(store)
    try:
        writer.start()
        told.wait_for([False])
        said = caplog.text
        assert f"a row of schema '{store.schema}' is locked by another session that does nothing" in said, said
        assert "idle in its transaction, holds this daemon's write (pid " in said, said
        writer.join(WAIT)
        assert len(waiting) == 1 and isinstance(waiting[0], errors.Unavailable), waiting
        assert "pid" not in str(waiting[0]), waiting[0]
    finally:
        for release in releases:
            release()
        writer.join(WAIT)
    told.wait_for([False, True])
    store.transact(_write)


def test_a_daemons_own_long_write_holding_the_revision_row_is_not_reported(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A write holds ``meta``'s row from its first statement to its commit; one that takes longer
    than the probe's wait (an import) is working, not stuck, and health stays SERVING."""
    told = Told()
    store.on_reachability(told)
    caplog.set_level(logging.WARNING)
    other = psycopg.connect(PostgresSettings.from_url(store.url).conninfo, autocommit=True)
    try:
        other.execute(b"BEGIN")
        other.execute(f'UPDATE "{store.schema}".meta SET writes = writes'.encode())
        for _ in range(8):  # a write busy for 2.4 s, a statement at a time, none idle for long
            other.execute(b"SELECT pg_sleep(0.3)")
        other.execute(b"ROLLBACK")
    finally:
        other.close()
    assert told.states == [] and "is locked by another session" not in caplog.text


def test_a_row_held_by_a_role_the_daemon_may_not_see_is_reported(
    stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon's role as docs/operations.md grants it may not see another role's sessions' state
    (only ``pg_read_all_stats`` may), so an administrator's forgotten session idle in its
    transaction looked like no holder at all, and health stayed SERVING."""
    from tests.test_postgres_store import _daemon_role

    monkeypatch.setattr(postgres_store, "LISTEN_SECONDS", 0.2)
    with (
        _daemon_role(stigmer_postgres_store_url) as (url, admin_conninfo, _),
        PostgresStore(f"{url}&health_timeout_ms=1000", durable=False) as store,
    ):
        store.transact(_write)
        told = Told()
        store.on_reachability(told)
        with psycopg.connect(admin_conninfo, autocommit=True) as admin:  # another role: a superuser's
            admin.execute(b"BEGIN")
            admin.execute(f'SELECT * FROM "{store.schema}".meta FOR UPDATE'.encode())
            writer, _ = _writer(store)
            try:
                writer.start()
                told.wait_for([False])
                assert "of a role whose sessions this one may not see" in caplog.text, caplog.text
            finally:
                admin.execute(b"ROLLBACK")
                writer.join(WAIT)
        told.wait_for([False, True])


def test_a_forgotten_row_lock_is_found_within_one_and_a_half_health_timeouts(stigmer_postgres_store_url: str) -> None:
    """The look for it ran after the listener's 5 s quiet spell: a write waiting behind one was
    reported up to 10 s after it began with the default 5 s health timeout (an operator's probe).
    The spell is now half the health timeout when that is shorter (here 1 s: 0.5 s)."""
    with PostgresStore(f"{stigmer_postgres_store_url}&health_timeout_ms=1000", durable=False) as store:
        store.transact(lambda txn: txn.put(b"o/k", b"v"))
        told = Told()
        store.on_reachability(told)
        release = _holding(store, "SELECT * FROM {s}.meta FOR UPDATE")
        writer, _ = _writer(store)
        try:
            started = time.monotonic()
            writer.start()
            told.wait_for([False])
            # 1 s behind the lock, then the next look within 0.5 s; the 5 s spell took up to 6 s
            assert time.monotonic() - started < 4.5
        finally:
            release()
            writer.join(WAIT)
        told.wait_for([False, True])
