"""What a store engine must provide.

The write path is shaped for engines without interactive transactions (etcd
compares mod-revisions of what was read, then applies buffered writes in one
``Txn``): ``Store.transact`` takes a function, which the engine may run more
than once, and which must have no effect outside its transaction except
through ``WriteTxn.on_commit``. Both engines run it in a group commit's
transaction shared with other callers, and run the batch again when one of
its callers' functions raised, each caller then in a nested transaction
(LMDB) or under a savepoint (PostgreSQL) that its failure rolls back alone;
PostgreSQL runs it again too when the database aborts the transaction as a
conflict.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from stigmer_core.store.retention import EventRetention

T = TypeVar("T")


class SnapshotMoved(Exception):
    """A restartable read found that a write committed between two of its queries.

    Raised only to a caller that asked for ``Store.read(restartable=True)``,
    which then reads again with ``restartable=False``; nothing it read may be
    used.
    """


def scan_each(txn: ReadTxn, prefixes: Sequence[bytes], first: int = 0) -> list[tuple[bytes, bytes]]:
    """``ReadTxn.scan_many`` as a scan of each prefix in turn, for an engine whose reads cost no
    round trip (an embedded one)."""
    found: list[tuple[bytes, bytes]] = []
    for prefix in prefixes:
        found.extend(itertools.islice(txn.scan(prefix, first=first), first or None))
    return found


def sizes_each(txn: ReadTxn, prefixes: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """``ReadTxn.sizes_under`` as a scan of each prefix in turn."""
    return [(key, len(value)) for prefix in prefixes for key, value in txn.scan(prefix)]


class ReadTxn(Protocol):
    """A consistent snapshot."""

    @property
    def revision(self) -> int:
        """The newest committed revision this snapshot sees."""
        ...

    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in order. An engine whose gets are round trips (a database
        server) may ask for them together: a step that knows what it will read asks at once."""
        ...

    def scan(self, prefix: bytes, *, after: bytes = b"", first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Keys starting with ``prefix`` in byte order, strictly after ``after`` if given.

        ``first``: how many entries the caller expects to read (0: unknown), a list page's
        size and one more. An engine that fetches a range in batches (a database) makes its
        first batch that size rather than a full one, so a page of 100 does not fetch and
        decode 256 objects; reading on past it still works, batch by batch."""
        ...

    def scan_many(self, prefixes: Sequence[bytes], *, first: int = 0) -> list[tuple[bytes, bytes]]:
        """``scan`` of each of ``prefixes`` (distinct, none inside another), in their order, each
        prefix's entries in byte order; ``first``: at most so many of each prefix's (0: all).

        An engine whose reads are round trips (a database server) reads them together: a cascade
        delete reads what each level of its tree owns, and every object's referrers, this way,
        with every other writer of the store waiting. ``scan_each`` is the plain way."""
        ...

    def sizes_under(self, prefixes: Sequence[bytes]) -> list[tuple[bytes, int]]:
        """Each key under ``prefixes`` (as ``scan_many`` takes them) with its value's size, the
        values themselves unread: a delete counts what the versions it removes held in their
        org's usage, and a version holds a whole object."""
        ...

    def events(self, after_revision: int, partitions: Collection[str] | None = None) -> Iterator[tuple[int, bytes]]:
        """Event log entries with a revision above ``after_revision``, oldest first.

        With ``partitions``, only the revisions filed under one of them or under the
        shared partition ``""``, whole; read through each partition's own index, so
        a reader of one org pays nothing for other orgs' events.
        """
        ...

    def oldest_event_revision(self) -> int:
        """Revision of the oldest retained event (0 when the log is empty)."""
        ...

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        """The newest revision an event of one of ``partitions`` was pruned from (None: of any).

        A stream resuming after revision R has lost events when this is above R.
        Revisions of the shared partition ``""`` count for every partition. 0:
        nothing was pruned. See ``store.retention`` for which revisions go first.
        """
        ...


class WriteTxn(ReadTxn, Protocol):
    """A snapshot that buffers writes until the store commits them."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> bool: ...

    def discard(self, key: bytes) -> None:
        """``delete``, with no answer of whether the key was there: a store whose deletes are round
        trips (PostgreSQL) sends those of a write together, one statement for a cascade of
        thousands of objects instead of one each."""
        ...

    def write_revision(self) -> int:
        """The revision this transaction commits at; allocated on first call."""
        ...

    def append_event(self, payload: bytes, partition: str = "") -> int:
        """Add an event of ``partition`` (an org) at this transaction's revision; return the revision.

        A revision belongs to its first event's partition; one whose events
        name two partitions belongs to the shared partition ``""``.
        """
        ...

    def forget_partition(self, partition: str) -> int:
        """Drop every revision filed under ``partition`` (an org; not the shared one) from the
        event log, and record ``partition`` as pruned through the current revision (the log's
        own watermark through the newest revision dropped), so a stream of it resuming from
        before is told (``compacted_through``), whatever of it the shared partition still
        holds; return how many revisions went. For an org whose objects are gone: its history
        must not outlive it for whoever gets the name."""
        ...

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the caller's thread once the commit is durable."""
        ...


class Store(Protocol):
    def read(self, *, restartable: bool = False) -> AbstractContextManager[ReadTxn]:
        """A consistent snapshot.

        ``restartable``: the caller can throw away what it read and read
        again, so an engine whose snapshots cost round trips may answer the
        first queries without holding a transaction and raise
        ``SnapshotMoved`` from a query that would see another state than the
        ones before it. An engine whose snapshots are free ignores it.
        """
        ...

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in a write transaction and return its result once durable.

        An exception from ``fn`` rolls back its writes (and only its writes)
        and is re-raised to the caller.
        """
        ...

    def wait_for_revision(self, after: int, timeout: float) -> int:
        """Block until a revision above ``after`` is committed or ``timeout``
        passes; return the newest committed revision either way."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BoundsStreamReads(Protocol):
    """A store whose reads each hold one of a few connections (a pool shared with unary calls).

    Streams catching up on the event log read it page after page; hundreds of them
    at once would hold every connection and leave a get waiting out its timeout.
    The event hub lets at most ``stream_read_slots`` of those reads run at once; a
    stream waits its turn. An engine whose reads take nothing scarce (LMDB) has none.
    """

    @property
    def stream_read_slots(self) -> int: ...


Handed = Callable[[int, int, "list[tuple[int, bytes]]"], None]
"""A follower of a store's commits: ``(after, through, events)``, see ``HandsOverEvents``."""


@runtime_checkable
class WakesWaiters(Protocol):
    """A store whose ``wait_for_revision`` can be cut short: the event hub's dispatcher waits there
    between commits, and an application that closes (a client's ``close()``) would otherwise wait out
    the dispatcher's poll interval."""

    def wake_waiters(self) -> None:
        """Answer every ``wait_for_revision`` waiting now, with the revision as it is."""
        ...


@runtime_checkable
class HandsOverEvents(Protocol):
    """A store that gives the events of each of its own commits to a follower (the event hub).

    The log alone cannot carry every change when retention is 0 bytes or 0
    seconds: each commit prunes the revisions before it, those of its own
    batch included, so a reader that came a moment late finds them gone. Each
    follower is called once per commit, in commit order, from the committing
    thread, with the revisions the commit took (``after`` < r <= ``through``)
    and every event it appended (revision, payload; oldest first), pruned or
    not, before ``wait_for_revision`` answers ``through`` or more. It must be
    quick and must not raise. Other daemons' commits (a shared database) are
    not handed over: they are read from the log.
    """

    def follow_commits(self, follower: Handed) -> None:
        """Hand every later commit to ``follower`` too."""
        ...

    def unfollow_commits(self, follower: Handed) -> None:
        """Hand no more commits to ``follower``."""
        ...


@runtime_checkable
class ReportsReachability(Protocol):
    """A store that can lose what it stores in (a database server) while the daemon runs.

    The daemon's health service follows it: NOT_SERVING while the store says it
    cannot serve (its database does not answer, or a newer release migrated its
    schema), so a load balancer in front of several daemons sends calls to one
    that can.
    """

    def on_reachability(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(reachable)`` whenever that changes, from the engine's own thread."""
        ...


@runtime_checkable
class CountsCommits(Protocol):
    """A store that counts the write transactions it committed (a daemon's metrics show it)."""

    commits: int


class PoolStats(NamedTuple):
    """A database connection pool's state now (``ReportsPool``)."""

    size: int
    """Connections open, lent out or not."""
    idle: int
    """Connections open and not lent out."""
    max: int
    """Most connections the pool may open."""
    waiting: int
    """Callers waiting for a connection."""


@runtime_checkable
class ReportsPool(Protocol):
    """A store that holds a pool of database connections, whose state a daemon's metrics show."""

    def pool_stats(self) -> PoolStats:
        """The pool's state, without waiting on the database."""
        ...


class EventLogStats(NamedTuple):
    """The event log's fill and the bounds it is kept within (``ReportsEventLog``).

    ``revision - compacted`` is how far back a watch can resume: one resuming at
    ``compacted`` or before ends ABORTED, and the log is pruned once it is past
    a bound, so a log near its bounds is a short resume window for runners.
    """

    revision: int
    """The newest revision committed, as this daemon knows it."""
    revisions: int
    """Revisions the log holds, every org's together."""
    bytes: int
    """Bytes of events the log holds."""
    compacted: int
    """The newest revision pruned from the log (of any org's share; 0: none yet)."""
    retention: EventRetention
    """The bounds the log is pruned by."""


@runtime_checkable
class ReportsEventLog(Protocol):
    """A store whose event log's fill a daemon's metrics show."""

    def event_log_stats(self) -> EventLogStats:
        """The log's figures, without waiting on a database (what the engine last read or wrote)."""
        ...


class StoreUse(enum.Enum):
    """How an application holds a store that daemons share (``postgres_use``); on LMDB the data
    directory's lock keeps a daemon and the commands that need it alone apart."""

    NONE = "none"
    """A command's application (it lives for one command, and whatever it seals is checked against
    the store's key in that write's transaction) or a read-only one."""
    SHARE = "share"
    """A daemon, or any application that stays open: one of many."""
    SOLE = "sole"
    """A key rotation: refused while any other holds the store, and none starts until it ends."""


class SchemaVersions(NamedTuple):
    seen: int
    """The database schema's version as this daemon last read it (0 before its first read)."""
    known: int
    """The newest version this release serves; ``seen`` past it is a newer release's migration."""


@runtime_checkable
class ReportsSchemaVersion(Protocol):
    """A store whose schema other releases migrate (a database daemons share), told in metrics
    so a daemon left behind by a rolling upgrade is seen for what it is."""

    def schema_versions(self) -> SchemaVersions: ...


@runtime_checkable
class SharedByDaemons(Protocol):
    """A store other daemons write to as well (a database they share). What a daemon keeps in
    memory of the store's contents (the API token cache) must then follow their commits too,
    which it reads from the event log; a store only this process writes needs no such reader."""

    shared_by_daemons: bool


@runtime_checkable
class ReadsAhead(Protocol):
    """A store whose every read inside a write is a round trip with the write lock held (a
    database server), told which keys nearly every write reads, so it can fetch them with
    the transaction's first statement: the release records of the kinds (``m/kinds/<name>``).
    Optional, checked once when the daemon reconciles its kinds."""

    def read_ahead(self, keys: Collection[bytes]) -> None:
        """From now on, fetch ``keys`` as each write transaction begins (replacing earlier ones)."""
        ...


class Submitted(Protocol):
    """A queued write's answer, final once its ``notify`` was called."""

    result: Any
    error: BaseException | None
    callbacks: list[Callable[[], None]]
    """``on_commit`` callbacks still to run: none once answered (the store ran them, caller or not)."""


@runtime_checkable
class RehearsesWrites(Protocol):
    """A store whose writes hold what orders every writer of it (a database's revision lock, every
    daemon waiting) for each round trip: a dry run goes through ``rehearse``, which runs the write
    without taking it and always rolls back. Optional, checked once when the executor is made."""

    def rehearse(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` as ``transact`` would, in a transaction of its own that orders nothing and is
        rolled back whatever ``fn`` does: its reads may see commits made while it runs."""
        ...


@runtime_checkable
class SubmitsWrites(Protocol):
    """A store whose writes can be queued by a caller that does not wait in a thread
    (grpc's asyncio server): optional, checked once when the server starts."""

    def submit(self, fn: Callable[[WriteTxn], Any], notify: Callable[[], None]) -> Submitted:
        """Queue ``fn`` as ``transact`` would run it; ``notify`` is called from another thread
        once the returned write is answered (durable, or failed) and its ``on_commit``
        callbacks have run, whether or not its caller is still waiting."""
        ...
