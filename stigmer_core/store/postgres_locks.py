"""Whether another session holds a lock on the store's tables that stops this daemon's calls.

A lock on a table the store writes (``kv``, ``meta``, ``events``, ``event_parts``) that conflicts with a write's (``LOCK TABLE stigmer.kv``, a
``VACUUM FULL``, an ``ALTER TABLE`` or a ``CREATE INDEX`` without ``CONCURRENTLY``, someone's own
migration against the schema) left every call that needed the table waiting out
``statement_timeout_ms`` (30 s), while health stayed SERVING: the database answered the daemon's
reads of the revision, which touch none of them but ``meta`` (a lock on it was told as a database
that does not answer, naming no one). The listener's quiet-spell read now first asks for the lock
a write takes on every one of them, waiting at most half of ``health_timeout_ms``; a lock
it cannot have is reported as the database not answering is (health NOT_SERVING, calls waiting
on it given up, the next refused at once), naming the session holding it, until it is released.
Nothing is written: the probe's transaction is rolled back, and a lock taken for a moment (a
vacuum truncating the table's end) is waited for, not reported.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from stigmer_core.store.postgres_schema import TABLE_PRIVILEGES

log = logging.getLogger(__name__)

TABLES = tuple(
    table for table, allowed in TABLE_PRIVILEGES.items() if {"INSERT", "UPDATE", "DELETE"} & set(allowed)
)
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


def holders_sql(schema: str) -> bytes:
    relations = ", ".join(f"'\"{schema}\".{table}'::regclass" for table in TABLES)
    modes = ", ".join(f"'{mode}'" for mode in BLOCKING)
    return (
        "SELECT l.relation::regclass::text, l.mode, l.pid, coalesce(a.usename, ''), "
        "left(coalesce(a.query, ''), 120) FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.granted AND l.locktype = 'relation' AND l.relation IN ({relations}) AND l.mode IN ({modes}) "
        "ORDER BY l.pid LIMIT 3"
    ).encode()


def locked_by(conn: psycopg.Connection[Any], schema: str, probe: bytes, holders: bytes) -> str:
    """ "" when a write could lock the store's tables now; else who holds them, in words.
    ``conn`` is an idle autocommit connection, left idle again."""
    try:
        conn.execute(probe)
        return ""
    except pg_errors.LockNotAvailable:
        pass
    except psycopg.OperationalError:  # the connection's (no answer within the bound): the caller's to judge
        raise
    except psycopg.Error as exc:  # a role or a standby that may not take the lock: nothing to tell
        log.debug("could not check the store's tables for locks: %s", exc)
        _rolled_back(conn)
        return ""
    _rolled_back(conn)
    try:
        rows = conn.execute(holders).fetchall()
    except psycopg.Error:
        rows = []
    if not rows:  # released meanwhile, or held by a session this role cannot see
        return f"a table of schema {schema!r} ({', '.join(TABLES)}) is locked by another session"
    said = "; ".join(
        f"{table} locked ({mode}) by pid {pid}" + (f", user {user}" if user else "") + (f": {query!r}" if query else "")
        for table, mode, pid, user, query in rows
    )
    return f"a table of schema {schema!r} is locked by another session ({said})"


def _rolled_back(conn: psycopg.Connection[Any]) -> None:
    """The probe's transaction, left open by its failure, ended."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(b"ROLLBACK")
