"""The embedded LMDB engine, with group commit.

One LMDB environment has one writer, and a durable commit costs two fsyncs
(about 3k commits/s on these machines). Throughput under many callers
therefore comes from sharing commits: the first caller to find no batch in
progress becomes the leader, takes every queued write (up to ``max_batch``),
runs each caller's function in one transaction, and commits once. A function
that raises must not take the others' writes with it, so a batch in which one
failed runs again with each caller in a nested transaction of its own, which
a failure aborts alone; writes seldom fail there (requests are checked before
they queue), so batches rarely pay for nested transactions. Every caller is answered only after the shared commit
is durable, and its ``on_commit`` callbacks then run in its own thread.
The commit syncs the data pages and writes the meta page; the meta page's
sync runs after the write lock is free (``_settle``), while the next batch
runs, since two syncs in a row would otherwise leave the CPU idle for one.

Readers take read-only snapshots and never wait for writers. The map grows
(doubling) when full; growing needs no transaction open in this process,
so readers pass through a gate that a resize can close briefly.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import lmdb

from stigmer_core import errors, forks
from stigmer_core.store import keys
from stigmer_core.store.event_shares import Changes, Share, ShareBook
from stigmer_core.store.group_commit import GroupCommit, Pending
from stigmer_core.store.protocol import EventLogStats, Handed, scan_each, sizes_each
from stigmer_core.store.retention import PRUNE_PER_COMMIT, EventRetention

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_MAP_SIZE = 1 << 30  # address space only; the file grows with the data

__all__ = ["PRUNE_PER_COMMIT", "EventRetention", "LmdbStore"]
"""``EventRetention`` and ``PRUNE_PER_COMMIT`` live in ``store.retention`` (every engine
keeps the log by them); they are named here too for callers that import them from this module."""


MAX_READERS = 1024
"""LMDB's reader table: read transactions open at once, of every process that has the store open."""


class _ResizeGate:
    """Lets a map resize wait until no transaction is open, at no lock cost to readers.

    Entering and leaving are a list append and pop, each atomic under the
    GIL. A resize first raises its flag, then waits for the list to empty; a
    reader that enters and then sees the flag steps back out and waits for
    the resize, so no transaction is ever open across ``set_mapsize``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._open: list[None] = []
        self._resizing = False

    def enter(self) -> None:
        while True:
            self._open.append(None)
            if not self._resizing:
                return
            self._open.pop()
            with self._cond:
                while self._resizing:
                    self._cond.wait()

    def leave(self) -> None:
        self._open.pop()

    def exclusive(self, action: Callable[[], None]) -> None:
        with self._cond:
            self._resizing = True
            try:
                while self._open:
                    self._cond.wait(0.001)
                action()
            finally:
                self._resizing = False
                self._cond.notify_all()


_LOW_SPACE = 1 << 20
"""Free bytes under which a failed commit is reported as a full disk."""
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"


def _check_openable(path: Path) -> None:
    """Refuse, with a reason, a data file LMDB would silently reset or fail on later.

    An empty ``data.mdb`` (truncated by a crash or a copy gone wrong) would
    open as a new, empty store, so every object would appear deleted. A
    read-only one would open and then fail at the first write; on a read-only
    mount the refusal is a ``ReadOnlyMount``, since such a store can still be
    read (``LmdbStore(read_only=True)``).
    """
    data = path / DATA_FILE
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        if not os.access(path, os.W_OK):
            raise errors.StartupError(f"the data directory {path} is not writable") from None
        return
    _check_not_empty(data, size)
    if os.access(data, os.R_OK | os.W_OK) and not _read_only_mount(data):
        return
    message = f"{data} is read-only: the daemon needs to write it (check its permissions and mount)"
    if _read_only_mount(data) and os.access(data, os.R_OK):
        raise errors.ReadOnlyMount(message, problem=f"{data} is on a read-only mount")
    raise errors.StartupError(message)


def _check_not_empty(data: Path, size: int) -> None:
    if size == 0:
        raise errors.StartupError(
            f"{data} is empty (0 bytes), not a store: it was truncated or is not what this directory held; "
            "restore it from a backup, or move it away to start an empty store"
        )


def _read_lock(path: Path) -> bool:
    """Whether reading the store in ``path`` takes LMDB's lock (else: refused, with a reason).

    The lock file holds the reader table that keeps a writer from reusing the
    pages a reader is on, so it is taken whenever it can be written. Without
    it a read is safe only where no writer can exist: a data file on a
    read-only mount, where ``lock.mdb`` cannot be written either. A data file
    merely not writable by this user may have a writer (a daemon of another
    user), so there an unwritable lock file is refused.
    """
    data = path / DATA_FILE
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        raise errors.StartupError(f"there is no store in {path} to read ({DATA_FILE} is missing)") from None
    _check_not_empty(data, size)
    if not os.access(data, os.R_OK):
        raise errors.StartupError(f"{data} cannot be read (check its permissions)")
    lock = path / LOCK_FILE
    if os.access(lock if lock.exists() else path, os.W_OK):
        return True
    if _read_only_mount(data):
        return False
    raise errors.StartupError(
        f"{lock} cannot be written, and LMDB's lock file is needed to read {data} safely while it may "
        "be written (check its permissions)"
    )


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _revision_of(txn: lmdb.Transaction) -> int:
    raw = txn.get(keys.REVISION)
    return int.from_bytes(raw, "big") if raw else 0


_Get = Callable[[bytes], "bytes | None"]
_Put = Callable[[bytes, bytes], None]
_Delete = Callable[[bytes], bool]


class _Ended:
    """What an ended reader holds instead of its transaction: any use of it is a bug, said so."""

    def __getattr__(self, name: str) -> object:
        raise errors.PluginFault("internal error: a read transaction was used after it ended")

    def __call__(self, *args: object) -> object:
        raise errors.PluginFault("internal error: a read transaction was used after it ended")

    def abort(self) -> None:
        return None


_ENDED: Any = _Ended()


class _Reader:
    __slots__ = ("_gate", "_txn", "get")

    def __init__(self, txn: lmdb.Transaction, gate: _ResizeGate | None) -> None:
        self._txn = txn
        self._gate = gate
        # Transactions are begun with buffers=False, so lmdb's own get already
        # answers bytes or None: bound directly, a read costs no Python frame.
        self.get = cast(_Get, txn.get)

    def __enter__(self) -> _Reader:
        return self

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self.get
        return [get(key) for key in keys]

    def __exit__(self, *exc: object) -> None:
        self._txn.abort()
        # py-lmdb keeps an aborted read's reader slot until the Transaction object is freed: one
        # kept alive by whatever still holds this reader (a call's context, until its answer is
        # sent) held a slot, and 2,500 gets in flight ran out of LMDB's reader table
        self._txn = self.get = _ENDED
        if self._gate is not None:
            self._gate.leave()

    @property
    def revision(self) -> int:
        return _revision_of(self._txn)

    def scan_many(self, prefixes: Sequence[bytes], *, first: int = 0) -> list[tuple[bytes, bytes]]:
        return scan_each(self, prefixes, first)

    def sizes_under(self, prefixes: Sequence[bytes]) -> list[tuple[bytes, int]]:
        return sizes_each(self, prefixes)

    def scan(self, prefix: bytes, *, after: bytes = b"", first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor()  # a cursor reads lazily: ``first`` changes nothing here
        if not cursor.set_range(after or prefix):
            return
        if after and cursor.key() == after and not cursor.next():
            return
        for raw_key, value in cursor:
            key = bytes(raw_key)  # buffers=False: already bytes, so no copy
            if not key.startswith(prefix):
                return
            yield key, bytes(value)

    def events(
        self, after_revision: int, partitions: Collection[str] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        cursor = self._txn.cursor()
        if partitions is None:
            if not cursor.set_range(keys.event_key(after_revision + 1, 0)):
                return
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if not key.startswith(keys.EVENTS):
                    return
                yield keys.event_revision(key), bytes(value)
            return
        # Each partition's revisions are an index of their own, in order: merged, they are the
        # revisions to read, whole, without passing over other partitions' events.
        filed = (self._filed(part, after_revision) for part in {"", *partitions})
        at = -1  # the revision the cursor stands at (-1: past the log's end, or not placed yet)
        for revision in heapq.merge(*filed):
            # Placed already when the revision before was the log's one before; else placed here.
            if at != revision and not cursor.set_range(keys.event_key(revision, 0)):
                return
            at = -1
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if not key.startswith(keys.EVENTS):
                    break
                found = keys.event_revision(key)
                if found != revision:
                    at = found
                    break
                yield revision, bytes(value)

    def _filed(self, partition: str, after_revision: int) -> Iterator[int]:
        """The revisions ``partition`` holds above ``after_revision``, oldest first."""
        prefix = keys.event_part_revisions(partition.encode())
        cursor, size = self._txn.cursor(), len(prefix)
        if not cursor.set_range(prefix + (after_revision + 1).to_bytes(8, "big")):
            return
        for raw in cursor.iternext(values=False):
            key = bytes(raw)  # buffers=False: already bytes, so no copy
            if not key.startswith(prefix):
                return
            yield int.from_bytes(key[size:], "big")

    def oldest_event_revision(self) -> int:
        cursor = self._txn.cursor()
        if cursor.set_range(keys.EVENTS):
            key = bytes(cursor.key())
            if key.startswith(keys.EVENTS):
                return keys.event_revision(key)
        return 0

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        get = self.get
        if partitions is None:
            raw = get(keys.EVENT_COMPACTED)
            return int.from_bytes(raw, "big") if raw else 0
        found = Share.parse(get(keys.event_part_key(b""))).compacted
        for partition in partitions:
            found = max(found, Share.parse(get(keys.event_part_key(partition.encode()))).compacted)
        return found


def _counter(txn: lmdb.Transaction, key: bytes) -> int:
    raw = txn.get(key)
    return int.from_bytes(raw, "big") if raw else 0


OldestEvent = tuple[int, int]
"""(revision, commit time in ns) of the oldest event a committed transaction left in the log."""
_Tally = tuple["OldestEvent | None", int, int, int, Changes]
"""What one caller's write hands the next in a batch: the oldest event (when known), the
revision, the log's byte total (-1: not read yet), its count of revisions and the shares
the batch changed so far (``store.event_shares``)."""


_NEVER = 1 << 63
"""The time of an event stored without one: retention by age never drops it."""


class _Writer(_Reader):
    """One caller's nested transaction in a batch.

    The revision, the event log's byte total and its count of revisions are
    carried from one caller to the next in Python and stored once per batch
    (``_commit_batch``), not read and written by every caller: each lmdb call
    lets go of the GIL, and under load every release wakes a thread that has to
    go back to sleep.
    """

    __slots__ = (
        "_base",
        "_book",
        "_callbacks",
        "_changes",
        "_checked",
        "_now",
        "_owned",
        "_part",
        "_part_bytes",
        "_retention",
        "_revision",
        "_seq",
        "appended",
        "delete",
        "discard",
        "event_bytes",
        "held",
        "oldest",
        "put",
    )

    def __init__(self, txn: lmdb.Transaction, retention: EventRetention, tally: _Tally, book: ShareBook) -> None:
        super().__init__(txn, None)
        self.put = cast(_Put, txn.put)  # as ``get``: no Python frame per write
        self.delete = cast(_Delete, txn.delete)
        self.discard = self.delete  # a delete is no round trip here: the same call
        self.oldest, self._base, self.event_bytes, self.held, self._changes = tally
        self._book = book
        self._owned = False
        """Whether ``_changes`` is this caller's own copy (the one handed in belongs to the batch)."""
        self._revision = 0
        self._seq = 0
        self._now = 0
        self._part = b""
        self._part_bytes = 0
        self._checked = ""  # the empty partition needs no check
        self._retention = retention
        self._callbacks: list[Callable[[], None]] = []
        self.appended: list[tuple[int, bytes]] = []
        """This caller's events, for the store's follower (``HandsOverEvents``): a later caller of
        the same batch may prune them before the commit makes them visible."""

    @property
    def tally(self) -> _Tally:
        return self.oldest, self.revision, self.event_bytes, self.held, self._changes

    @property
    def revision(self) -> int:
        return self._revision or self._base

    def write_revision(self) -> int:
        if not self._revision:
            self._revision = self._base + 1
        return self._revision

    def append_event(self, payload: bytes, partition: str = "") -> int:
        if partition != self._checked:  # one org's events in a row: checked once
            keys.check_partition(partition)
            self._checked = partition
        revision = self.write_revision()
        txn = self._txn
        if self.event_bytes < 0:
            self.event_bytes = _counter(txn, keys.EVENT_BYTES)
            self.held = _counter(txn, keys.EVENT_REVISIONS)
        part = partition.encode()
        if self._seq == 0:
            self._now = now = time.time_ns()
            keep = self._retention
            oldest = self.oldest
            # Look at the log's oldest events only when they may be past a bound:
            # most commits find nothing to prune, and a cursor costs more than this.
            if (
                oldest is None
                or self.held >= keep.max_revisions
                or oldest[1] < now - keep.max_age_seconds * 1_000_000_000
                or self.event_bytes > keep.max_bytes
            ):
                self._prune_events(revision, now)
            self._part = part
            txn.put(keys.event_time_key(revision), now.to_bytes(8, "big") + part)
            txn.put(keys.event_part_revision_key(part, revision), b"")
            self.held += 1
        elif part != self._part and self._part:  # two orgs in one revision: it goes to the shared partition
            txn.delete(keys.event_part_revision_key(self._part, revision))
            self._part = b""
            txn.put(keys.event_time_key(revision), self._now.to_bytes(8, "big"))
            txn.put(keys.event_part_revision_key(b"", revision), b"")
        txn.put(keys.event_key(revision, self._seq), payload)
        self.appended.append((revision, payload))
        self.event_bytes += len(payload)
        self._part_bytes += len(payload)
        self._seq += 1
        return revision

    def forget_partition(self, partition: str) -> int:
        keys.check_partition(partition)
        if not partition:
            raise errors.InvalidArgument("the shared partition of the event log cannot be forgotten")
        txn, part = self._txn, partition.encode()
        if self.event_bytes < 0:
            self.event_bytes = _counter(txn, keys.EVENT_BYTES)
            self.held = _counter(txn, keys.EVENT_REVISIONS)
        filed = list(self._filed(partition, 0))
        cursor = txn.cursor()
        for rev in filed:
            _, size, _ = self._drop_revision(cursor, rev, part)
            self.held = max(self.held - 1, 0)
            self.event_bytes = max(self.event_bytes - size, 0)
        newest = filed[-1] if filed else 0
        # The partition's watermark goes to now, not to its newest revision: events of the org
        # filed in the shared partition (written before the log had partitions, or a revision
        # naming several orgs) stay, and a watch of it from before now must not read them.
        share = self._book.get(part, self._changes)
        self._change(part, Share(0, 0, max(share.compacted, newest, self.revision)))
        if newest > _counter(txn, keys.EVENT_COMPACTED):
            txn.put(keys.EVENT_COMPACTED, newest.to_bytes(8, "big"))
        return len(filed)

    def _change(self, part: bytes, share: Share) -> None:
        if not self._owned:
            self._changes = dict(self._changes)
            self._owned = True
        self._changes[part] = share  # type: ignore[index]  # this caller's own copy

    def finish(self) -> None:
        """Count this transaction's revision in its partition's share (once, when its function
        succeeded); the batch stores the shares it changed (``LmdbStore._commit_batch``)."""
        if not self._seq:
            return
        share = self._book.get(self._part, self._changes)
        self._change(self._part, Share(share.revisions + 1, share.size + self._part_bytes, share.compacted))

    def _prune_events(self, revision: int, now: int) -> None:
        """Drop revisions past a retention bound (store.retention says which go first);
        leave the byte total, the revision count and the oldest event left in
        ``event_bytes``, ``held`` and ``oldest`` (this revision's, when none is).

        Runs once per committing transaction and deletes at most about
        ``PRUNE_PER_COMMIT`` events (always whole revisions), so its cost per
        commit stays bounded and a backlog (after a smaller setting, or one
        huge cascade) is worked off over the next commits.
        """
        keep = self._retention
        age_floor = now - keep.max_age_seconds * 1_000_000_000
        book = self._book
        cursor = self._txn.cursor()
        deleted = 0
        compacted = before = _counter(self._txn, keys.EVENT_COMPACTED)
        first = self._oldest_revision(cursor)
        while first is not None and deleted < PRUNE_PER_COMMIT:
            rev, stamped, part = first
            if stamped >= age_floor:  # else the oldest goes, whatever its partition
                if self.held >= keep.max_revisions:
                    largest = book.largest(self._changes, by_bytes=False)
                elif self.event_bytes > keep.max_bytes:
                    largest = book.largest(self._changes, by_bytes=True)
                else:
                    break
                if largest is not None and largest != part:
                    part, rev = largest, self._oldest_of(largest, rev)
            count, size, following = self._drop_revision(cursor, rev, part)
            share = book.get(part, self._changes)
            self._change(part, Share(max(share.revisions - 1, 0), max(share.size - size, 0), max(share.compacted, rev)))
            compacted = max(compacted, rev)
            self.held = max(self.held - 1, 0)
            self.event_bytes = max(self.event_bytes - size, 0)
            deleted += max(count, 1)
            if rev == first[0]:  # the event after it is the log's oldest now
                first = self._revision_of(following)
        if first is None:
            self.oldest = (revision, now)
        else:  # past the cap, the oldest left is not looked at: the next commit looks again
            self.oldest = (first[0], first[1] if deleted < PRUNE_PER_COMMIT else 0)
        if compacted > before:  # the newest pruned from any partition is the newest of theirs
            self._txn.put(keys.EVENT_COMPACTED, compacted.to_bytes(8, "big"))

    def _oldest_revision(self, cursor: lmdb.Cursor) -> tuple[int, int, bytes] | None:
        """The log's oldest revision: (revision, commit time in ns, partition)."""
        if not cursor.set_range(keys.EVENTS):
            return None
        return self._revision_of(bytes(cursor.key()))

    def _revision_of(self, key: bytes) -> tuple[int, int, bytes] | None:
        """The revision of an event's key, as ``_oldest_revision`` answers it (None: not an event's)."""
        if not key.startswith(keys.EVENTS):
            return None
        rev = keys.event_revision(key)
        stamp = self._txn.get(keys.event_time_key(rev))
        if stamp is None:  # stored before commit times were kept: never too old, in the shared partition
            return rev, _NEVER, b""
        return rev, int.from_bytes(stamp[:8], "big"), bytes(stamp[8:])

    def _oldest_of(self, part: bytes, fallback: int) -> int:
        prefix = keys.event_part_revisions(part)
        for key, _ in self.scan(prefix):
            return int.from_bytes(key[len(prefix) :], "big")
        return fallback  # pragma: no cover - a share without revisions is never the largest

    def _drop_revision(self, cursor: lmdb.Cursor, rev: int, part: bytes) -> tuple[int, int, bytes]:
        """Delete one revision's events and what records it; return how many events and bytes
        went, and the key after its last event (b"": none)."""
        count = size = 0
        following = b""
        if cursor.set_range(keys.event_key(rev, 0)):
            while True:
                key = bytes(cursor.key())
                if not key.startswith(keys.EVENTS) or keys.event_revision(key) != rev:
                    following = key
                    break
                size += len(cursor.value())
                count += 1
                if not cursor.delete():
                    break
        txn = self._txn
        txn.delete(keys.event_time_key(rev))
        txn.delete(keys.event_part_revision_key(part, rev))
        return count, size, following

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)


class LmdbStore:
    """Store on an LMDB environment in ``path`` (created if missing).

    ``read_only``: an existing store opened only to be read (LMDB's read-only
    environment: nothing is created or upgraded, every write is refused), with
    LMDB's lock unless the data file is on a read-only mount (``_read_lock``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
        max_batch: int = 256,
        event_retention: int | None = None,
        retention: EventRetention | None = None,
        read_only: bool = False,
    ) -> None:
        """``retention`` bounds the event log; ``event_retention`` alone sets its revision count."""
        self.path = Path(path)
        self.durable = durable
        """Whether a commit is synced to disk (files kept beside the store follow it)."""
        self.read_only = read_only
        self.mounted_read_only = False
        """Whether the data file is on a read-only mount (then ``read_only`` is the only way it opens)."""
        if read_only:
            lock = _read_lock(self.path)
            self.mounted_read_only = _read_only_mount(self.path / DATA_FILE)
        else:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            _check_openable(self.path)
            lock = True
        try:
            self._env = lmdb.open(
                str(self.path),
                mode=0o600,  # data.mdb and lock.mdb: sealed secrets live here
                map_size=map_size,
                sync=durable,
                metasync=False,  # a durable commit's meta page is synced by ``_settle``, after the write lock
                readahead=False,
                max_readers=MAX_READERS,
                readonly=read_only,
                lock=lock,
                create=not read_only,
            )
        except lmdb.Error as exc:
            where = str(self.path.resolve())
            if "already open in this process" in str(exc):
                pid = forks.opener(where)
                if pid is not None and pid != os.getpid():
                    raise errors.StartupError(forks.forked_message(str(self.path), pid)) from None
                raise errors.StartupError(
                    f"the store in {self.path} is already open in this process: connect() shares it between "
                    "calls naming the same data directory, store and read_only, but not with an Application "
                    "opened directly or a connect() with the other read_only: use that one, or close it first"
                ) from None
            raise errors.StartupError(f"cannot open the store in {self.path}: {exc}") from None
        self._where = str(self.path.resolve())
        forks.opened(self._where)
        self._gate = _ResizeGate()
        self._writes = GroupCommit(self._commit_batch, max_batch, self._settle_failure)
        self._event_counts = (-1, 0)
        """The event log's byte total and count of revisions as the last commit that wrote an
        event left them ((-1, 0): not known yet, read by the next write that logs an event).
        This process is the store's only writer, so the next batch starts from them instead
        of reading them again."""
        self._oldest_event: OldestEvent | None = None
        """The oldest event the last commit left, once a commit has looked (see ``_Writer.append_event``).

        Events only leave the log by pruning and only newer ones join it, so
        the oldest can only be this or newer: a bound this one is within, the
        log is within. Set only from a commit that succeeded."""
        self._retention = (retention or EventRetention()).with_revisions(event_retention)
        self._book = ShareBook(())
        """The partitions' shares of the event log as the last commit left them (read at open).
        This process is the store's only writer, so what it committed is what the store holds."""
        self.commits = 0
        """Durable commits so far (each may carry many callers' writes)."""
        self.commit_seconds = 0.0
        """Wall time spent holding the write lock (running batches and committing them).
        Batches take turns on it, so over a run its share of the elapsed time says
        whether the write lock is what limits the write rate (see ``bench/creates.py``)."""
        self.commit_cpu_seconds = 0.0
        """CPU time the committing threads spent in that time; wall far above it is
        time a committer waited (for the GIL, for the disk) while holding the lock."""
        self._revision_lock = threading.Lock()
        self._revision_cond = threading.Condition(self._revision_lock)
        self._waiting = 0
        """Threads in ``wait_for_revision`` (counted under the lock): a commit nobody waits
        for announces its revision without the Condition's notify (Python code, every commit)."""
        self._followers: tuple[Handed, ...] = ()
        with self._env.begin() as txn:
            self._revision = _revision_of(txn)
            shared = txn.get(keys.EVENT_REVISIONS) is not None
            counted = txn.get(keys.EVENT_BYTES) is not None
        if read_only:
            pass  # the bookkeeping an older store lacks is added by the next open that writes
        elif not shared:
            self._share_event_log()
        elif not counted:
            self._count_event_bytes()
        with self._env.begin(buffers=False) as txn:
            prefix = len(keys.EVENT_PARTS)
            found = _Reader(txn, None).scan(keys.EVENT_PARTS)
            self._book = ShareBook((key[prefix:], Share.parse(value)) for key, value in found)

    def _count_event_bytes(self) -> None:
        """Count the event log's bytes again when the count is missing."""
        with self._env.begin(write=True) as txn:
            total = sum(len(value) for _, value in _Reader(txn, None).scan(keys.EVENTS))
            txn.put(keys.EVENT_BYTES, total.to_bytes(8, "big"))

    def _share_event_log(self) -> None:
        """Count an event log written before it was kept in shares (once per store).

        Its events' orgs are not known here (the store sees bytes), so every
        revision goes to the shared partition, which counts for every org: it
        is pruned as the whole log was, and a stream resuming before its oldest
        revision is told so, as it always was.
        """
        with self._env.begin(write=True) as txn:
            total = 0
            held: list[int] = []
            for key, value in _Reader(txn, None).scan(keys.EVENTS):
                total += len(value)
                rev = keys.event_revision(key)
                if not held or held[-1] != rev:
                    held.append(rev)
            for rev in held:
                txn.put(keys.event_part_revision_key(b"", rev), b"")
            revisions = len(held)
            compacted = held[0] - 1 if held else _revision_of(txn)
            txn.put(keys.event_part_key(b""), Share(revisions, total, compacted).packed())
            txn.put(keys.EVENT_COMPACTED, compacted.to_bytes(8, "big"))
            txn.put(keys.EVENT_BYTES, total.to_bytes(8, "big"))
            txn.put(keys.EVENT_REVISIONS, revisions.to_bytes(8, "big"))

    # -- reads -------------------------------------------------------------
    def read(self, *, restartable: bool = False) -> _Reader:
        """Snapshots cost nothing here, so ``restartable`` changes nothing."""
        self._gate.enter()
        try:
            return _Reader(self._env.begin(buffers=False), self._gate)
        except lmdb.ReadersFullError:
            self._gate.leave()
            log.warning("every one of the store's %d reader slots is taken: a read was refused", MAX_READERS)
            raise errors.Unavailable(
                f"the store has {MAX_READERS} reads open at once, the most it can (LMDB's reader table): retry in a "
                "moment"
            ) from None
        except BaseException:
            self._gate.leave()
            raise

    def event_log_stats(self) -> EventLogStats:
        """Read from the store's own counters: a read transaction here waits on nothing."""
        with self.read() as reader:
            revisions, size, compacted = (
                int.from_bytes(raw or b"", "big")
                for raw in reader.get_many((keys.EVENT_REVISIONS, keys.EVENT_BYTES, keys.EVENT_COMPACTED))
            )
            return EventLogStats(reader.revision, revisions, size, compacted, self._retention)

    # -- writes ------------------------------------------------------------
    def transact(self, fn: Callable[[Any], T]) -> T:
        if self.read_only:
            raise errors.FailedPrecondition(
                f"the store in {self.path} is opened read-only: nothing can be written", reason="READ_ONLY"
            )
        return self._writes.transact(fn)

    def submit(self, fn: Callable[[Any], Any], notify: Callable[[], None]) -> Pending:
        return self._writes.submit(fn, notify)

    def _commit_batch(self, batch: list[Pending]) -> Callable[[], None] | None:
        """Run the batch in one transaction and commit it; when durable, return what
        makes it so (the meta page's sync), which the group commit runs after
        handing on the write lock, so the next batch need not wait for it."""
        nested = False
        while True:
            self._gate.enter()
            wall, cpu = time.perf_counter(), time.thread_time()
            outer = self._env.begin(write=True)
            try:
                counts = self._event_counts
                tally: _Tally = (self._oldest_event, _revision_of(outer), *counts, {})
                start = tally[1]
                handed: list[tuple[int, bytes]] = []
                failed = False
                for pending in batch:
                    ran = self._run_one(outer, pending, tally, handed, nested)
                    if ran is not None:
                        tally = ran
                    elif not nested:  # what it wrote cannot be taken back alone
                        failed = True
                        break
                if failed:
                    outer.abort()
                    self._gate.leave()
                    if len(batch) == 1:
                        return None  # its error is its answer, and nothing else was in the batch
                    nested = True  # run the batch again, each caller in a nested transaction
                    continue
                oldest, revision, event_bytes, held, changes = tally
                if revision != start:
                    outer.put(keys.REVISION, revision.to_bytes(8, "big"))
                if event_bytes >= 0 and (event_bytes, held) != counts:
                    outer.put(keys.EVENT_BYTES, event_bytes.to_bytes(8, "big"))
                    outer.put(keys.EVENT_REVISIONS, held.to_bytes(8, "big"))
                for part, share in changes.items():
                    outer.put(keys.event_part_key(part), share.packed())
                outer.commit()  # durable store: the data pages are synced; the meta page is written
                self.commits += 1
                self.commit_seconds += time.perf_counter() - wall
                self.commit_cpu_seconds += time.thread_time() - cpu
                self._oldest_event = oldest
                self._event_counts = (event_bytes, held)
                self._book.commit(changes)
            except lmdb.MapFullError:
                outer.abort()
                self._gate.leave()
                self._grow()
                continue
            except BaseException as exc:  # disk failure or interrupt: nobody's write landed
                outer.abort()
                failure = self._commit_failure(exc)
                for pending in batch:
                    pending.error = pending.error or failure
                    pending.result = None
                self._gate.leave()
                return None
            self._gate.leave()
            if revision != start:  # followers read after the commit: one that came later reads the store
                for follower in self._followers:
                    follower(start, revision, handed)
            if not self.durable:
                self._announce(revision)
                return None
            return lambda: self._settle(revision)

    def _settle(self, revision: int) -> None:
        """Make a committed batch durable (LMDB's meta-page sync), then announce its revision:
        watchers see only what a crash cannot take back."""
        self._env.sync(True)
        self._announce(revision)

    def _announce(self, revision: int) -> None:
        if revision > self._revision:
            with self._revision_lock:  # the Condition's own lock, without its Python-level enter and exit
                if revision > self._revision:
                    self._revision = revision
                    if self._waiting:
                        self._revision_cond.notify_all()

    def _settle_failure(self, exc: BaseException) -> BaseException:
        """What callers are told when their committed batch could not be synced to disk."""
        if not isinstance(exc, lmdb.Error | OSError):
            return exc
        log.error("store sync failed in %s: %s", self.path, exc)
        return errors.Unavailable(
            f"the store in {self.path} could not sync this write to disk ({exc}): it may not survive a crash; "
            "check the disk, then read the object back before retrying"
        )

    def _commit_failure(self, exc: BaseException) -> BaseException:
        """What callers are told when the shared commit fails: the disk's state, not lmdb's words.

        A full filesystem shows as ENOSPC, or as EIO when the write-back of the
        pages fails; either way the free space says which. Reads keep working
        (they need no new pages), and writes succeed again once space returns.
        """
        if not isinstance(exc, lmdb.Error | OSError):
            return exc
        log.error("store commit failed in %s: %s", self.path, exc)
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            free = -1
        full = isinstance(exc, lmdb.DiskError) or getattr(exc, "errno", None) == errno.ENOSPC
        if full or 0 <= free < _LOW_SPACE:
            return errors.ResourceExhausted(
                f"the disk holding the store ({self.path}) is full ({free if free >= 0 else '?'} bytes free): "
                "nothing was written; free some space on that disk and retry (reads still work; deleting through "
                "stigmer needs space too, since the store writes a changed page anew before it frees the old one)",
                reason="DISK_FULL",
            )
        if isinstance(exc, lmdb.ReadonlyError):
            return errors.Unavailable(f"the store in {self.path} cannot be written (read-only): nothing was written")
        return errors.Unavailable(f"the store in {self.path} could not commit ({exc}): nothing was written; retry")

    def _run_one(
        self,
        outer: lmdb.Transaction,
        pending: Pending,
        tally: _Tally,
        handed: list[tuple[int, bytes]],
        nested: bool,
    ) -> _Tally | None:
        """Run one caller's write, in a nested transaction of ``outer`` or (``nested`` false)
        in ``outer`` itself; return what the next caller starts from, or None when it failed
        (its error set). Its events join ``handed``.

        Writes rarely fail inside the transaction (the pipeline checks a request before it
        queues), so a batch first runs without a nested transaction's begin and commit per
        caller, and runs again nested only when one failed.
        """
        pending.error = None
        pending.result = None
        pending.callbacks = []
        txn = self._env.begin(write=True, parent=outer) if nested else outer
        writer = _Writer(txn, self._retention, tally, self._book)
        try:
            pending.result = pending.fn(writer)
            writer.finish()
        except lmdb.MapFullError:
            if nested:
                txn.abort()
            raise
        except Exception as exc:
            if nested:
                txn.abort()
            pending.result = None
            pending.error = (
                errors.InvalidArgument(  # a key past LMDB's 511 bytes: an index value the request made too long
                    "a value of this write is too long to be indexed (a store key is at most 511 bytes)"
                )
                if isinstance(exc, lmdb.BadValsizeError)
                else exc
            )
            return None
        if nested:
            txn.commit()
        pending.callbacks = writer._callbacks
        handed.extend(writer.appended)
        return writer.tally

    def _grow(self) -> None:
        size = self._env.info()["map_size"] * 2
        log.info("store map full; growing to %d MiB", size >> 20)
        self._gate.exclusive(lambda: self._env.set_mapsize(size))

    def follow_commits(self, follower: Handed) -> None:
        """Give each later commit's events to ``follower`` as it commits, before it is announced
        (``HandsOverEvents``); batches commit one at a time, so they come in revision order."""
        with self._revision_cond:
            self._followers = (*self._followers, follower)

    def unfollow_commits(self, follower: Handed) -> None:
        with self._revision_cond:
            # ``!=``, not ``is not``: a bound method is a new object each time it is named
            self._followers = tuple(f for f in self._followers if f != follower)

    def wait_for_revision(self, after: int, timeout: float) -> int:
        with self._revision_cond:
            if self._revision <= after and not self._writes.closed:
                self._waiting += 1
                try:
                    self._revision_cond.wait(timeout)
                finally:
                    self._waiting -= 1
            return self._revision

    def wake_waiters(self) -> None:
        with self._revision_cond:
            self._revision_cond.notify_all()

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        if not self._writes.close():
            return
        with self._revision_cond:
            self._revision_cond.notify_all()  # watchers wake up and find the store closed
        self._env.close()
        forks.closed(self._where)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
