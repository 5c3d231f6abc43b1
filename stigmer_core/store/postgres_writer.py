"""The PostgreSQL engine's writes: one caller's write transaction, and what it knows of the event log.

``Writer`` is what a write's ``fn`` is given inside a batch the store commits (``PostgresStore._run_batch``):
it holds puts and appends back to send them in one statement, answers gets from what it holds,
and prunes the event log by ``Log``, the tally the revision-lock statement began. What it asks
of the store is ``WriterStore``, so this module, which the store imports, imports no store.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import attrs
import psycopg

from stigmer_core import errors
from stigmer_core.store import keys
from stigmer_core.store.postgres_faults import drop_after_pipeline
from stigmer_core.store.postgres_reader import Reader, ReaderStore, execute
from stigmer_core.store.retention import PRUNE_PER_COMMIT, EventRetention


class WriterStore(ReaderStore, Protocol):
    """What a ``Writer`` asks of its store (``PostgresStore``) besides a reader's: the statements
    that write."""

    _sql_delete: bytes
    _sql_delete_many: bytes
    _sql_put: bytes
    _sql_put_many: bytes
    _sql_append: bytes
    _sql_append_many: bytes
    _sql_put_and_append: bytes
    _sql_share_and_append: bytes
    _sql_forget_part: bytes
    _sql_count_parts: bytes
    _sql_prune: bytes


@attrs.define
class Log:
    """What a write transaction knows of the event log, from the revision-lock statement on.

    ``oldest`` may be older than the log is (the lock statement's snapshot can
    predate a commit it waited for): then a commit asks the prune to look and it
    finds less, never drops what it should keep; a log seen empty that no
    longer is leaves its pruning by age to the next commit. ``bytes``,
    ``revisions`` and ``compacted`` come from the locked row itself, so they
    are exact, and the commit writes them back.

    ``parts`` holds what the appends added to each partition since
    ``event_parts`` was last written: the commit writes it in one statement,
    and so does a prune before it picks, so a commit pays one statement for
    its partitions' counts however many revisions and events it has.
    """

    bytes: int
    revisions: int
    """Revisions the log holds."""
    compacted: int
    """The newest revision pruned, of any partition."""
    oldest: int
    """Revision of the oldest event (0: the log is empty)."""
    oldest_at: datetime.datetime | None
    now: datetime.datetime
    """The database's clock when the transaction took the revision lock."""
    keep: EventRetention
    """The bounds this commit prunes by: the schema's (``meta.retention_*``) when recorded."""
    parts: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    """Per partition, (revisions, bytes) added since its ``event_parts`` row was written."""

    def copy(self) -> Log:
        return attrs.evolve(self, parts=dict(self.parts))

    def count(self, part: str, revisions: int, size: int) -> None:
        held, total = self.parts.get(part, (0, 0))
        self.parts[part] = (held + revisions, total + size)

    def counts(self) -> tuple[list[str], list[int], list[int]] | None:
        """``parts`` as the arrays of ``_sql_count_parts`` (None: nothing to write)."""
        changed = [(part, n, size) for part, (n, size) in self.parts.items() if n or size]
        if not changed:
            return None
        return [p for p, _, _ in changed], [n for _, n, _ in changed], [b for _, _, b in changed]

    def over(self, keep: EventRetention) -> bool:
        """Whether the log is past a bound, before a commit appends a revision to it."""
        if not self.revisions:
            return False
        return self.revisions >= keep.max_revisions or self.bytes > keep.max_bytes or self.aging(keep)

    def age_floor(self, keep: EventRetention) -> datetime.datetime:
        return self.now - datetime.timedelta(seconds=keep.max_age_seconds)

    def aging(self, keep: EventRetention) -> bool:
        """Whether the oldest event may be past the age bound (the real one is as old or newer)."""
        return self.oldest_at is not None and self.oldest_at < self.age_floor(keep)


class Writer(Reader):
    """Inside a READ COMMITTED transaction that holds the revision row lock.

    Every statement is a round trip with the revision lock held, so round
    trips, not CPU, set how fast the whole schema takes writes (an Agent
    create sent eleven puts, two appends and seven gets). Puts and event
    appends wait in ``_puts`` and ``_appends`` and go to the database in one
    statement: with the commit, for all the callers of a batch that run in one
    transaction (``take_held``), or when ``fn`` returns, for a caller under a
    savepoint (``flush``); and before a read that could see them (a scan, a
    read of the event log) or a prune. A get is answered from ``_puts`` or
    from ``_got``, what this transaction read already: no other writer can
    change a row while this one holds the revision lock, and a delete goes out
    at once and is remembered there. An error of a statement held until the
    commit runs the batch again with savepoints, where it is raised inside its
    own ``fn``'s run.

    Not a pipeline: psycopg ends one with a flush request after its Sync,
    after which the server does not start ``idle_in_transaction_timeout``
    again, so a daemon paused next would hold the revision lock for good.
    For the same reason the transaction begins with one simple-protocol
    statement (``BEGIN`` and the revision lock), not a pipeline of two.
    """

    __slots__ = (
        "_appends",
        "_base",
        "_callbacks",
        "_deletes",
        "_got",
        "_log",
        "_part",
        "_part_bytes",
        "_puts",
        "_revision",
        "_seq",
        "_wrote",
        "appended",
    )

    _store: WriterStore

    def __init__(
        self,
        store: WriterStore,
        conn: psycopg.Connection[Any],
        base: int,
        tally: Log,
        known: dict[bytes, bytes | None],
        puts: dict[bytes, bytes],
        appends: list[tuple[int, int, bytes, str]],
        deletes: set[bytes] | None = None,
    ) -> None:
        super().__init__(store, conn)
        self._began = True
        self._base = base
        self._log = tally
        self._revision = 0
        self._seq = 0
        self._part = ""
        """The partition of this transaction's revision: its first event's, or the shared one."""
        self._part_bytes = 0
        """Bytes of this transaction's events so far."""
        self._wrote = False
        self._puts = puts
        """Puts not sent yet, by key (a later put of a key replaces the earlier one's value);
        shared with the batch's other callers while they run in one transaction (``_run_batch``)."""
        self._appends = appends
        """Events not sent yet: revision, seq, payload, partition (shared as ``_puts`` is)."""
        self._deletes = set() if deletes is None else deletes
        """Keys ``discard`` removed and not sent yet (shared as ``_puts`` is); sent before the puts,
        so a key put again after its discard is there at the end."""
        self._got = known
        """What gets of this transaction read (or the batch read ahead for it), and what it
        deleted (None), by key."""
        self._callbacks: list[Callable[[], None]] = []
        self.appended: list[tuple[int, bytes]] = []
        """This caller's events, for the store's follower (``HandsOverEvents``): a later caller of
        the same batch may prune them before the commit makes them visible."""

    @property
    def revision(self) -> int:
        return self._revision or self._base

    def put(self, key: bytes, value: bytes) -> None:
        self._wrote = True
        self._puts[key] = value

    def get(self, key: bytes) -> bytes | None:
        if key in self._puts:
            return self._puts[key]
        if key in self._got:
            return self._got[key]
        rows = Reader._rows(self, self._store._sql_get, (key,), one=True)  # a row no waiting put touches
        found = self._got[key] = bytes(rows[0][0]) if rows else None
        return found

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One statement for the keys this write has neither put nor read."""
        puts, got = self._puts, self._got
        wanted = [key for key in dict.fromkeys(keys) if key not in puts and key not in got]
        if len(wanted) > 1:
            rows = Reader._rows(self, self._store._sql_get_many, (wanted,))  # rows no waiting put touches
            found = {bytes(key): bytes(value) for key, value in rows}
            for key in wanted:
                got[key] = found.get(key)
        return [self.get(key) for key in keys]

    def delete(self, key: bytes) -> bool:
        self._wrote = True
        waiting = self._puts.pop(key, None) is not None
        if not waiting and key in self._got and self._got[key] is None:
            return False  # read (or deleted) here as absent, and no other writer can have added it
        try:
            cur = execute(self._conn, self._store._sql_delete, (key,))
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc
        self._got[key] = None
        return waiting or cur.rowcount > 0

    def discard(self, key: bytes) -> None:
        self._wrote = True
        self._puts.pop(key, None)
        if key in self._got and self._got[key] is None:
            return  # read (or deleted) here as absent already
        self._deletes.add(key)
        self._got[key] = None

    def _rows_none(self, query: bytes, params: tuple[Any, ...]) -> None:
        try:
            self._conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc

    def _rows(
        self, query: bytes, params: tuple[Any, ...], one: bool = False, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        self.flush()
        return super()._rows(query, params, one, prepare)

    def flush(self) -> None:
        """Send the discards, puts and appends not sent yet (one statement each at most)."""
        for held in self.take_held():
            try:
                self._conn.execute(*held)
            except psycopg.Error as exc:
                raise self._store._translate(exc) from exc

    def take_held(self) -> list[tuple[bytes, tuple[Any, ...]]]:
        """The statements that send the discards, then the puts and appends, not sent yet, which
        are then no longer held (emptied in place: the batch's other callers may share them)."""
        held: list[tuple[bytes, tuple[Any, ...]]] = []
        deletes = self._deletes
        if deletes:
            held.append((self._store._sql_delete_many, (list(deletes),)))
            deletes.clear()
        puts, appends = self._puts, self._appends
        if not puts and not appends:
            return held
        self._got.update(puts)
        store = self._store
        query: bytes
        params: tuple[Any, ...]
        if not appends:
            query, params = (
                (store._sql_put, next(iter(puts.items())))
                if len(puts) == 1
                else (store._sql_put_many, (list(puts), list(puts.values())))
            )
        elif not puts and len(appends) == 1:
            query, params = store._sql_append, appends[0]
        else:
            revisions, seqs, payloads, parts = (list(column) for column in zip(*appends, strict=True))
            events = (revisions, seqs, payloads, parts)
            query = store._sql_put_and_append if puts else store._sql_append_many
            params = (list(puts), list(puts.values()), *events) if puts else events
        puts.clear()
        appends.clear()
        held.append((query, params))
        return held

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        if partitions is None:
            return self._log.compacted  # written to ``meta`` only at commit
        return super().compacted_through(partitions)

    def write_revision(self) -> int:
        if not self._revision:
            self._revision = self._base + 1
        return self._revision

    def forget_partition(self, partition: str) -> int:
        keys.check_partition(partition)
        if not partition:
            raise errors.InvalidArgument("the shared partition of the event log cannot be forgotten")
        self._wrote = True
        rows = self._rows(self._store._sql_forget_part, (partition, partition, self.revision))
        revisions, size, newest = (int(value) for value in rows[0])
        if revisions:
            tally = self._log
            tally.revisions = max(tally.revisions - revisions, 0)
            tally.bytes = max(tally.bytes - size, 0)
            tally.compacted = max(tally.compacted, newest)
            tally.count(partition, -revisions, -size)  # event_parts' counts, written at commit
        return revisions

    def append_event(self, payload: bytes, partition: str = "") -> int:
        keys.check_partition(partition)
        self._wrote = True
        revision = self.write_revision()
        store, tally, size = self._store, self._log, len(payload)
        if self._seq == 0:
            if tally.over(tally.keep):
                self._prune_and_append(revision, payload, partition)
            else:
                self._appends.append((revision, 0, payload, partition))
            if not tally.oldest:
                tally.oldest, tally.oldest_at = revision, tally.now
            self._part = partition
            tally.revisions += 1
            tally.count(partition, 1, size)
        elif partition != self._part and self._part:
            self.flush()  # the events it moves to the shared partition must be in the table
            self._rows_none(store._sql_share_and_append, (revision, revision, self._seq, payload))
            tally.count(self._part, -1, -self._part_bytes)
            tally.count("", 1, self._part_bytes + size)
            self._part = ""
        else:
            self._appends.append((revision, self._seq, payload, self._part))
            tally.count(self._part, 0, size)
        tally.bytes += size
        self._part_bytes += size
        self._seq += 1
        self.appended.append((revision, payload))
        return revision

    def _prune_and_append(self, revision: int, payload: bytes, partition: str) -> None:
        """Bring the partitions' counts up to date and prune, in one round trip, then append.

        The append goes alone, after the pipeline, so the transaction's last message is not
        a pipeline's flush request, after which the server would not end it if this daemon
        then paused holding the revision lock (``Writer``)."""
        self.flush()  # the events it may prune (earlier callers' of the batch too) must be in the table
        store, tally = self._store, self._log
        keep = tally.keep
        params = {
            "cap": PRUNE_PER_COMMIT,
            "max_revisions": keep.max_revisions,
            "max_bytes": keep.max_bytes,
            "age_floor": tally.age_floor(keep),
            "aging": tally.aging(keep),
            "held": tally.revisions,
            "total": tally.bytes,
        }
        counts = tally.counts()
        conn = self._conn
        try:
            with conn.pipeline():
                if counts is not None:
                    conn.execute(store._sql_count_parts, counts)
                cur = conn.execute(store._sql_prune, params)
        except psycopg.Error as exc:
            drop_after_pipeline(conn)  # the batch fails with it: nothing of it was committed
            raise self._store._translate(exc) from exc
        try:
            row = cur.fetchone()
            conn.execute(store._sql_append, (revision, 0, payload, partition))
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc
        assert row is not None
        tally.parts.clear()
        _, revisions, pruned, through, oldest, oldest_at = row
        tally.bytes = max(tally.bytes - int(pruned), 0)
        tally.revisions = max(tally.revisions - int(revisions), 0)
        tally.compacted = max(tally.compacted, int(through))
        if oldest is None:  # everything before this revision went
            tally.oldest, tally.oldest_at = revision, tally.now
        else:
            tally.oldest, tally.oldest_at = int(oldest), oldest_at

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
