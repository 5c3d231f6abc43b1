"""Whether another session holds a lock on the store's tables that stops this daemon's calls.

A lock on a table the store writes (``kv``, ``meta``, ``events``, ``event_parts``) that conflicts with a write's (``LOCK TABLE stigmer.kv``, a
``VACUUM FULL``, an ``ALTER TABLE`` or a ``CREATE INDEX`` without ``CONCURRENTLY``, someone's own
migration against the schema) left every call that needed the table waiting out
``statement_timeout_ms`` (30 s), while health stayed SERVING: the database answered the daemon's
reads of the revision, which touch none of them but ``meta`` (a lock on it was told as a database
that does not answer, naming no one). The listener's quiet-spell read now first asks for the lock
a write takes on every one of them, waiting at most a quarter of ``health_timeout_ms``; a lock
it cannot have is reported as the database not answering is (health NOT_SERVING, calls waiting
on it given up, the next refused at once), naming the session holding it, until it is released.
Nothing is written: the probe's transaction is rolled back, and a lock taken for a moment (a
vacuum truncating the table's end) is waited for, not reported.

A row lock holds writes too: every write locks ``meta``'s one row (the revision orders writers),
and an object's write its ``kv`` rows, so a session that locked one (``SELECT ... FOR UPDATE``, an
``UPDATE``) and left its transaction open held every write of every daemon while health stayed
SERVING. Such a lock is found through the writes it holds: a session of this database waiting on
a lock, for longer than ``health_timeout_ms``, in a statement on the store's tables, behind a
session idle in its transaction that long (``pg_blocking_pids``: subtransactions and shared row
locks too), or behind one whose state this role may not see (another role's: never one of the
daemons', which share a role). The daemons' own writes hold those rows too, a long one (an import)
for seconds, but run their statements one after the other, so they are not reported. Looking
takes no lock and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors

from stigmer_core.store.postgres_schema import TABLE_PRIVILEGES

log = logging.getLogger(__name__)

TABLES = tuple(table for table, allowed in TABLE_PRIVILEGES.items() if {"INSERT", "UPDATE", "DELETE"} & set(allowed))
"""What a write takes a ROW EXCLUSIVE lock on: every table it writes (``kv``, ``meta``, ``events``,
``event_parts``; a lock on ``event_parts`` alone stalled every write as surely as one on ``kv``)."""

BLOCKING = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
"""The table lock modes a ROW EXCLUSIVE lock conflicts with."""


def probe_sql(schema: str, seconds: float) -> bytes:
    """One round trip: take the lock a write takes on the tables, within ``seconds``, and let it go."""
    tables = ", ".join(f'"{schema}".{table}' for table in TABLES)
    return (
        f"BEGIN; SET LOCAL lock_timeout = '{max(1, int(seconds * 1000))}ms'; "
        f"LOCK TABLE {tables} IN ROW EXCLUSIVE MODE; ROLLBACK"
    ).encode()


def blockers_sql(schema: str, seconds: float) -> bytes:
    """The sessions holding a lock that a write of this database's store has waited on for more
    than ``seconds``, when they are idle in their transaction that long, or of a role whose state
    this one may not see (the daemons share a role): at most three."""
    relations = ", ".join(f"'\"{schema}\".{table}'::regclass" for table in TABLES)
    ago = f"now() - interval '{max(1, int(seconds * 1000))} milliseconds'"
    return (
        "SELECT DISTINCT b.pid, coalesce(b.usename, ''), coalesce(b.application_name, ''), "
        "left(coalesce(b.query, ''), 120), coalesce(b.state, ''), w.pid "
        "FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid) "
        "JOIN pg_stat_activity b ON b.pid = blocker.pid "
        f"WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' AND w.query_start < {ago} "
        f"AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = w.pid AND l.relation IN ({relations})) "
        f"AND (b.state IS NULL OR (b.state LIKE 'idle in transaction%' AND b.state_change < {ago})) "
        "LIMIT 3"
    ).encode()


def holders_sql(schema: str) -> bytes:
    """The sessions holding, or waiting in line for, a lock on the tables a write's conflicts with,
    and for a waiting one the sessions it waits behind (a long read ahead of a queued ``ALTER
    TABLE`` holds every write behind both)."""
    relations = ", ".join(f"'\"{schema}\".{table}'::regclass" for table in TABLES)
    modes = ", ".join(f"'{mode}'" for mode in BLOCKING)
    return (
        "SELECT l.relation::regclass::text, l.mode, l.granted, l.pid, coalesce(a.usename, ''), "
        "left(coalesce(a.query, ''), 120), CASE WHEN l.granted THEN '{}' ELSE pg_blocking_pids(l.pid) END "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.locktype = 'relation' AND l.relation IN ({relations}) AND l.mode IN ({modes}) "
        "ORDER BY l.granted DESC, l.pid LIMIT 3"
    ).encode()


@attrs.frozen
class Locked:
    """A lock a write would wait for: ``said``, what callers are told (no session of the
    database's is named to them); ``holders``, who holds it, for the daemon's log."""

    said: str
    holders: str


def locked_by(
    conn: psycopg.Connection[Any], schema: str, probe: bytes, holders: bytes, blockers: bytes = b""
) -> Locked | None:
    """None when a write could lock the store's tables and ``meta``'s row now; else what holds
    them. ``conn`` is an idle autocommit connection, left idle again."""
    try:
        conn.execute(probe)
        return _writes_held_by(conn, schema, blockers) if blockers else None
    except pg_errors.LockNotAvailable:
        pass
    except psycopg.OperationalError:  # the connection's (no answer within the bound): the caller's to judge
        raise
    except psycopg.Error as exc:  # a role or a standby that may not take the lock: nothing to tell
        log.debug("could not check the store's tables for locks: %s", exc)
        _rolled_back(conn)
        return None
    _rolled_back(conn)
    try:
        rows = conn.execute(holders).fetchall()
    except psycopg.Error:
        rows = []
    said = f"a table of schema {schema!r} is locked by another session"
    return Locked(said, "; ".join(_held(*row) for row in rows) or "held by a session this role cannot see")


def _writes_held_by(conn: psycopg.Connection[Any], schema: str, blockers: bytes) -> Locked | None:
    try:
        idle = conn.execute(blockers).fetchall()
    except psycopg.OperationalError:  # the connection's: the caller's to judge
        raise
    except psycopg.Error as exc:  # a role that may not see the others' locks: nothing to tell
        log.debug("could not check the store's revision row for a lock: %s", exc)
        return None
    if not idle:
        return None
    named = "; ".join(_row_held(*row) for row in idle)
    return Locked(f"a row of schema {schema!r} is locked by another session that does nothing", named)


def _row_held(pid: int, user: str, application: str, query: str, state: str, waiter: int) -> str:
    who = (
        f"pid {pid}"
        + (f", user {user}" if user else "")
        + (f", application_name {application}" if application else "")
        + (f": {query!r}" if query and state else "")
    )
    how = "idle in its transaction" if state else "of a role whose sessions this one may not see"
    return f"a row locked by {who}, {how}, holds this daemon's write (pid {waiter})"


def _held(table: str, mode: str, granted: bool, pid: int, user: str, query: str, behind: Any) -> str:
    who = f"pid {pid}" + (f", user {user}" if user else "") + (f": {query!r}" if query else "")
    if granted:
        return f"{table} locked ({mode}) by {who}"
    ahead = ", ".join(str(p) for p in behind or ())
    return f"{table}: {who} waits for {mode}" + (f" behind pid {ahead}" if ahead else "")


def _rolled_back(conn: psycopg.Connection[Any]) -> None:
    """The probe's transaction, left open by its failure, ended."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(b"ROLLBACK")
