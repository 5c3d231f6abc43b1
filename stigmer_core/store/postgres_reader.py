"""The PostgreSQL engine's reads: a snapshot on one pooled connection, its pages bounded in rows and bytes.

``Reader`` answers gets, scans and event-log reads for ``PostgresStore.read``, and is the base of
the write transaction's ``Writer`` (``postgres_writer``). The store builds the statements for its
schema (a page's with ``within_bytes``) and lends the connection and its translation of errors:
what a reader asks of it is ``ReaderStore``, so this module, which the store imports, imports
no store.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

import psycopg
import psycopg_pool

from stigmer_core.store import keys
from stigmer_core.store.postgres_connection import NoAnswer
from stigmer_core.store.postgres_settings import PostgresSettings
from stigmer_core.store.protocol import SnapshotMoved, scan_each, sizes_each


class ReaderStore(Protocol):
    """What a ``Reader`` asks of its store (``PostgresStore``): its settings, the statements it built
    for its schema, and its connections."""

    settings: PostgresSettings
    _sql_revision: bytes
    _sql_token: bytes
    _sql_get: bytes
    _sql_get_loose: bytes
    _sql_get_many: bytes
    _sql_get_many_loose: bytes
    _sql_scans: dict[str, tuple[bytes, bytes]]
    _sql_scan_many: bytes
    _sql_sizes_under: bytes
    _sql_events: bytes
    _sql_oldest_event: bytes
    _sql_compacted: bytes
    _sql_compacted_all: bytes

    @property
    def _pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]: ...

    def _release(self, conn: psycopg.Connection[Any], in_transaction: bool) -> None: ...

    def _replace_broken(self) -> psycopg.Connection[Any]: ...

    def _translate(self, exc: psycopg.Error) -> Exception: ...

    def part_events_sql(self, count: int) -> bytes: ...


def within_bytes(page: str, order: str, sized: str) -> str:
    """``page``'s rows (a query ending ``LIMIT n``) up to and with the first whose ``sized`` column
    takes their bytes to a bound or past it, the statement's last parameter: the first row
    always comes. ``octet_length`` reads a stored value's size without detoasting it, and a
    value past the bound is never sent."""
    return (
        f"SELECT {order}, {sized} FROM (SELECT page.*, sum(octet_length({sized})) OVER (ORDER BY {order}"
        f" ROWS UNBOUNDED PRECEDING) - octet_length({sized}) AS before FROM ({page}) AS page) AS sized"
        f" WHERE before < %s ORDER BY {order}"
    )


def _ended(rows: list[tuple[Any, ...]], limit: int, most: int) -> bool:
    """Whether a batch of ``within_bytes`` rows (the value last) was the end of its range: fewer
    rows than the LIMIT, and fewer bytes than the bound, which would have cut it there (a batch
    that ends the range at the bound exactly costs one more round trip, which finds nothing)."""
    return len(rows) < limit and sum(len(row[-1]) for row in rows) < most


def execute(conn: psycopg.Connection[Any], query: bytes, params: tuple[Any, ...] | None = None) -> psycopg.Cursor[Any]:
    """``conn.execute`` on a cursor the connection keeps, for a statement of small parameters and
    at most one row, read before the next is sent (a get, a delete): ``Connection.execute``
    builds a cursor (and its adapters map) per statement, about a third of the CPU psycopg
    spends on a get. The cursor keeps its last parameters and result until the connection's
    next statement, at most one object per pooled connection this way; so never a page of a
    scan (up to ``scan_page`` objects) nor a write's held puts, and never a statement of a
    pipeline, whose cursors are read after it ends."""
    cur: psycopg.Cursor[Any] | None = getattr(conn, "_stigmer_cursor", None)
    if cur is None or cur.closed:
        cur = conn.cursor()
        conn._stigmer_cursor = cur  # type: ignore[attr-defined]
    return cur.execute(query, params)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _plain_ranges(prefixes: Sequence[bytes]) -> list[bytes] | None:
    """Each prefix's range end, when each is a range of the ``kv`` table alone (not the event log
    or the revision, which live in tables of their own, and bounded above); else None."""
    ends = []
    for prefix in prefixes:
        end = _prefix_end(prefix)
        if end is None or keys.EVENTS.startswith(prefix) or prefix.startswith(keys.EVENTS):
            return None
        if keys.REVISION.startswith(prefix):
            return None
        ends.append(end)
    return ends


class Reader:
    """A snapshot on one pooled connection.

    A strict reader's transaction begins with its first query. A restartable
    one (``read(restartable=True)``) answers its first ``LOOSE_QUERIES``
    queries as single statements outside any transaction (a statement is a
    snapshot of its own), each also reading the ``meta`` row's revision and
    write count; a third query begins the transaction. While every answer
    carries the same pair, every one saw the same committed writes: writers
    take turns on that row and every commit that changed anything bumps the
    count, so a snapshot sees the first *n* writers for some *n*, and the pair
    names *n*. A different pair raises ``SnapshotMoved``. A get then costs one
    round trip where a transaction costs three (BEGIN, the query, ROLLBACK).
    """

    __slots__ = ("_began", "_conn", "_held", "_loose", "_store", "_token")

    _BEGIN = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, store: ReaderStore, conn: psycopg.Connection[Any], loose: int = 0) -> None:
        self._store = store
        self._conn = conn
        self._held = True
        self._began = False
        self._loose = loose
        """Queries this reader may still answer outside a transaction."""
        self._token: tuple[int, int] | None = None
        """(revision, writes) every answer so far saw."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._store._release(self._conn, self._began)

    def _seen(self, revision: int, writes: int) -> None:
        token = (int(revision), int(writes))
        if self._token is None:
            self._token = token
        elif token != self._token:
            raise SnapshotMoved(f"revision {self._token[0]} moved to {token[0]} between two queries of one read")

    def _rows(
        self, query: bytes, params: tuple[Any, ...], one: bool = False, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of ``query`` inside the transaction, begun here if need be; ``one``: at most
        one row, sent on the connection's kept cursor (``execute``); ``prepare``: psycopg's."""
        if self._began:
            try:
                if one:
                    return execute(self._conn, query, params).fetchall()
                return self._conn.execute(query, params, prepare=prepare).fetchall()
            except psycopg.Error as exc:
                raise self._store._translate(exc) from exc
        return self._on_fresh_connection(lambda: self._begin_with(query, params, one, prepare))

    def _begin_with(
        self, query: bytes, params: tuple[Any, ...], one: bool, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """BEGIN with the token (if loose answers came first), then ``query``: two round trips.

        Not one pipeline of the three: psycopg ends a pipeline with a flush request after its
        Sync, after which the server does not start ``idle_in_transaction_timeout``, so a daemon
        paused right after it would keep the snapshot open (and its tables' share locks, which a
        migration's ``ALTER TABLE`` waits for, every other daemon's statements then waiting
        behind that) until it woke. ``BEGIN`` and the token go as one simple-protocol statement.
        """
        conn = self._conn
        self._began = True  # from here on, releasing the connection rolls back whatever began
        if self._token is None:
            conn.execute(self._BEGIN, prepare=False)
        else:
            cur = conn.execute(self._BEGIN + b"; " + self._store._sql_token, prepare=False)
            cur.nextset()
            row = cur.fetchone()
            assert row is not None
            self._seen(*row)
        return (execute(conn, query, params) if one else conn.execute(query, params, prepare=prepare)).fetchall()

    def _loose_rows(
        self, loose: bytes, query: bytes, params: tuple[Any, ...], one: bool = False
    ) -> list[tuple[Any, ...]]:
        """``query``'s rows; outside a transaction while this reader may, through
        ``loose``: the same query joined to the ``meta`` row, whose first two
        columns are the token and whose third is NULL on the row of no result."""
        if self._began or self._loose <= 0:
            return self._rows(query, params, one)
        self._loose -= 1
        rows = self._on_fresh_connection(
            lambda: (execute(self._conn, loose, params) if one else self._conn.execute(loose, params)).fetchall()
        )
        self._seen(rows[0][0], rows[0][1])
        return [row[2:] for row in rows if row[2] is not None]

    def _on_fresh_connection(self, run: Callable[[], list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        """``run``, again on a fresh connection if the pooled one had died while idle
        (a database restart) and nothing had been read on it yet."""
        try:
            try:
                return run()
            except psycopg.OperationalError as exc:
                if isinstance(exc, NoAnswer) or not self._conn.broken or self._token is not None:
                    raise
                self._store._pool.putconn(self._conn)
                self._held = False
                self._conn = self._store._replace_broken()
                self._held = True
                return run()
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc

    @property
    def revision(self) -> int:
        if self._token is not None:
            return self._token[0]  # every answer so far saw this revision
        if self._began or self._loose <= 0:
            return int(self._rows(self._store._sql_revision, ())[0][0])
        self._loose -= 1
        row = self._on_fresh_connection(lambda: execute(self._conn, self._store._sql_token).fetchall())[0]
        self._seen(*row)
        return int(row[0])

    def get(self, key: bytes) -> bytes | None:
        store = self._store
        rows = self._loose_rows(store._sql_get_loose, store._sql_get, (key,), one=True)
        return bytes(rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One statement for them all: a list page read through an index gets its objects this
        way, where a get each was a round trip each (100 for a page)."""
        if len(keys) < 2:
            return [self.get(key) for key in keys]
        store = self._store
        rows = self._loose_rows(store._sql_get_many_loose, store._sql_get_many, (list(dict.fromkeys(keys)),))
        found = {bytes(key): bytes(value) for key, value in rows}
        return [found.get(key) for key in keys]

    def scan(self, prefix: bytes, *, after: bytes = b"", first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Keys in byte order, as LMDB would list them: the revision and the event
        log live in tables of their own but appear under ``m/revision`` and ``e/``."""
        extra: list[Iterator[tuple[bytes, bytes]]] = []
        if keys.EVENTS.startswith(prefix) or prefix.startswith(keys.EVENTS):
            extra.append(self._event_entries(prefix, after))
        if keys.REVISION.startswith(prefix) and after < keys.REVISION:
            extra.append(iter([(keys.REVISION, self.revision.to_bytes(8, "big"))]))
        if extra:
            yield from heapq.merge(self._scan_kv(prefix, after, first), *extra)
        else:
            yield from self._scan_kv(prefix, after, first)

    def scan_many(self, prefixes: Sequence[bytes], *, first: int = 0) -> list[tuple[bytes, bytes]]:
        """One statement for them all, each prefix an index range of its own."""
        ends = _plain_ranges(prefixes)
        if ends is None:
            return scan_each(self, prefixes, first)
        rows = self._rows(self._store._sql_scan_many, (list(prefixes), ends, first or None))
        return [(bytes(key), bytes(value)) for key, value in rows]

    def sizes_under(self, prefixes: Sequence[bytes]) -> list[tuple[bytes, int]]:
        """One statement for them all; ``octet_length`` reads a value's size without detoasting it."""
        ends = _plain_ranges(prefixes)
        if ends is None:
            return sizes_each(self, prefixes)
        rows = self._rows(self._store._sql_sizes_under, (list(prefixes), ends))
        return [(bytes(key), int(size)) for key, size in rows]

    def _event_entries(self, prefix: bytes, after: bytes) -> Iterator[tuple[bytes, bytes]]:
        store = self._store
        revision, seq = 0, -1
        page, most = store.settings.scan_page, store.settings.scan_bytes
        while True:
            rows = self._rows(store._sql_events, (revision, revision, seq, page, most))
            for rev, row_seq, payload in rows:
                key = keys.event_key(int(rev), int(row_seq))
                if key.startswith(prefix) and key > after:
                    yield key, bytes(payload)
            if _ended(rows, page, most):
                return
            revision, seq = int(rows[-1][0]), int(rows[-1][1])

    def _scan_kv(self, prefix: bytes, after: bytes, first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        store = self._store
        end = _prefix_end(prefix)
        start, inclusive = (after, False) if after and after >= prefix else (prefix, True)
        full, most = store.settings.scan_page, store.settings.scan_bytes
        page = min(first, full) if first > 0 else full
        while True:
            if end is None:
                name = "scan_from_ge" if inclusive else "scan_from_gt"
                params: tuple[Any, ...] = (start, page, most)
            else:
                name = "scan_ge" if inclusive else "scan_gt"
                params = (start, end, page, most)
            loose, strict = store._sql_scans[name]
            rows = self._loose_rows(loose, strict, params)
            for key, value in rows:
                yield bytes(key), bytes(value)
            if _ended(rows, page, most):
                return
            start, inclusive, page = bytes(rows[-1][0]), False, full

    def events(self, after_revision: int, partitions: Collection[str] | None = None) -> Iterator[tuple[int, bytes]]:
        store = self._store
        revision, seq = after_revision + 1, -1
        page, most = store.settings.scan_page, store.settings.scan_bytes
        parts = None if partitions is None else sorted({"", *partitions})
        while True:
            if parts is None:
                rows = self._rows(store._sql_events, (revision, revision, seq, page, most))
            else:
                # Planned with the partitions' values each time (never prepared): a plan made for
                # any partition walks the primary key, passing every other org's events one by one.
                query = store.part_events_sql(len(parts))
                params = [value for part in parts for value in (part, revision, revision, seq, page)]
                rows = self._rows(query, (*params, page, most), prepare=False)
            for rev, _, payload in rows:
                yield int(rev), bytes(payload)
            if _ended(rows, page, most):
                return
            revision, seq = int(rows[-1][0]), int(rows[-1][1])

    def oldest_event_revision(self) -> int:
        rows = self._rows(self._store._sql_oldest_event, ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        store = self._store
        if partitions is None:
            rows = self._rows(store._sql_compacted_all, ())
        else:
            rows = self._rows(store._sql_compacted, (list(partitions),))
        return int(rows[0][0]) if rows else 0
