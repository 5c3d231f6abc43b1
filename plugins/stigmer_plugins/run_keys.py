"""Run keys: one per execution context, destroyed when its run ends.

Where they live decides whether destroying them is real. LMDB copies pages
on write and a freed page keeps its contents, so a key deleted from the
store would outlive its deletion just like the values it sealed. Beside an
LMDB store, run keys therefore live in a slot file (``run-keys``) of
fixed-size records, and destroying one overwrites its record in place and
syncs the file (``FileRunKeys``). Another engine (PostgreSQL, where several
daemons share one database, so no local file would do) keeps them in the
store under ``k/<scope>`` (``StoreRunKeys``); a destroyed key then lasts
until the engine reclaims the row and recycles its log.

Either way a run key is kept wrapped (sealed) by the data-directory key, so
the slot file or the rows alone open nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs

from stigmer_core import FailedPrecondition, ResourceExhausted, Unavailable
from stigmer_core.datadir import open_private
from stigmer_core.store.protocol import ReadTxn, Store, WriteTxn
from stigmer_plugins.secret_box import NO_SECRET_KEY, NONCE, RUN_PREFIX, SecretBox, WrongKey, new_key

RUN_KEYS_FILE = "run-keys"
RUN_KEY_PREFIX = b"k/"
KEY_BYTES = 32
WRAPPED = NONCE + KEY_BYTES + 16



class _said:
    """The run-keys file's ``OSError`` as what a caller is told: a full disk is the store's
    ``RESOURCE_EXHAUSTED`` (as LMDB's own full disk is), no file descriptor left is a moment's
    UNAVAILABLE; it was answered INTERNAL ("a bug"). ``outcome``: what became of the write."""

    def __init__(self, path: Path, outcome: str) -> None:
        self._path = path
        self._outcome = outcome

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if not isinstance(exc, OSError):
            return
        code = exc.errno
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(
                f"the disk holding the store's run keys ({self._path}) is full: {self._outcome}; free some space "
                "on that disk and retry",
                reason="DISK_FULL",
            ) from exc
        if code in (errno.EMFILE, errno.ENFILE):
            raise Unavailable(
                f"the daemon has no file descriptor left to open its run keys ({self._path}): {self._outcome}; "
                "retry in a moment (raise its open-files limit, `ulimit -n`, if this recurs)"
            ) from exc
        raise Unavailable(f"the store's run keys ({self._path}) could not be written ({exc}): {self._outcome}") from exc


class RunKeys(Protocol):
    """Where run keys live: created in a writing transaction, destroyed when it commits."""

    def create(self, txn: WriteTxn, scope: str) -> bytes: ...

    def get(self, txn: ReadTxn, scope: str) -> bytes | None: ...

    def destroy(self, txn: WriteTxn, scope: str) -> None: ...

    def reclaim(self, txn: WriteTxn) -> int:
        """Destroy keys whose scope object is gone or holds no run-sealed value; return how many."""
        ...

    def begin_rotation(self, old: SecretBox, new: SecretBox) -> None:
        """Before the rotation commits: make every key openable with ``new`` as well as ``old``."""
        ...

    def rotate_in(self, txn: WriteTxn, old: SecretBox, new: SecretBox) -> int:
        """Inside the rotation's transaction: re-wrap what the store keeps; return how many."""
        ...

    def finish_rotation(self, current: SecretBox) -> None:
        """Keep only the wraps ``current`` opens (after a rotation, or one a crash interrupted)."""
        ...

    def count(self) -> int: ...


def _wrap_context(scope: str) -> bytes:
    return b"run-key/" + scope.encode()


def _scope_object(scope: str) -> bytes:
    """Scopes are ``<key_prefix>/<id>``: the object whose values the key seals."""
    return b"o/" + scope.encode()


def _holds_run_secrets(raw: bytes | None) -> bool:
    return raw is not None and RUN_PREFIX.encode() in raw


SCOPE_BYTES = 64
FP_BYTES = 8
WRAP_SLOT = FP_BYTES + WRAPPED
SLOT = SCOPE_BYTES + 2 * WRAP_SLOT
EMPTY = bytes(SLOT)
RECLAIM_FLOOR = 64


@attrs.define
class _Slot:
    index: int
    scope: str
    wraps: list[tuple[bytes, bytes]]  # (fingerprint prefix, wrapped key)


class FileRunKeys:
    """Run keys in fixed-size records of a file beside an LMDB store, overwritten in place.

    A record is ``scope | fp_a wrap_a | fp_b wrap_b`` (the second wrap only
    while a rotation is under way); an all-zero record is free. When the
    store syncs its commits (``durable``), so does this file: a created key
    once its transaction commits, before the caller is answered, so no run
    is acknowledged whose key a machine crash could lose (the sync runs in
    the caller's thread, outside the shared commit, so it does not hold up
    the other writers of a group commit); a destroyed one right after the
    transaction that ends the run commits. A key created by a transaction
    that then failed is an orphan that ``reclaim`` frees: at startup, and when the file is about to grow
    past twice the live records it held at the last reclaim (so a create pays
    for a whole-file pass only once per doubling).

    Which record holds a scope and which records are free are remembered as
    hints, each checked against the record itself under the file lock before
    it is used, so a create or a destroy reads one record, not the file,
    even when another process shares the file.
    """

    def __init__(self, path: Path, master: Callable[[], SecretBox], *, durable: bool = True) -> None:
        self.path = path
        self._master = master
        self._durable = durable
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._where: dict[str, int] = {}
        self._free: list[int] = []
        self._reclaim_at = RECLAIM_FLOOR

    # -- file access (under self._lock and an exclusive lock on the file) --
    def _open(self) -> int:
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def _parse(index: int, record: bytes) -> _Slot:
        wraps = []
        for offset in (SCOPE_BYTES, SCOPE_BYTES + WRAP_SLOT):
            part = record[offset : offset + WRAP_SLOT]
            if part != bytes(WRAP_SLOT):
                wraps.append((part[:FP_BYTES], part[FP_BYTES:]))
        return _Slot(index, record[:SCOPE_BYTES].rstrip(b"\0").decode(), wraps)

    def _scan(self, fd: int) -> list[_Slot]:
        """Every used record, read once; the hints are rebuilt from them."""
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        slots, free = [], []
        for index in range(len(data) // SLOT):
            record = data[index * SLOT : (index + 1) * SLOT]
            if record == EMPTY:
                free.append(index)
            else:
                slots.append(self._parse(index, record))
        self._free = free[::-1]  # pop() takes the lowest
        self._where = {slot.scope: slot.index for slot in slots}
        return slots

    @staticmethod
    def _records(fd: int) -> int:
        return os.fstat(fd).st_size // SLOT

    def _take_free(self, fd: int) -> int:
        while self._free:
            index = self._free.pop()
            if os.pread(fd, SLOT, index * SLOT) == EMPTY:
                return index
        return self._records(fd)  # a new record at the end

    def _record_of(self, fd: int, scope: str) -> int | None:
        index = self._where.get(scope)
        if index is not None and os.pread(fd, SCOPE_BYTES, index * SLOT).rstrip(b"\0") == scope.encode():
            return index
        for slot in self._scan(fd):  # no hint, or a stale one: read the file once
            if slot.scope == scope:
                return slot.index
        return None

    @staticmethod
    def _write(fd: int, index: int, scope: str, wraps: list[tuple[bytes, bytes]]) -> None:
        record = scope.encode().ljust(SCOPE_BYTES, b"\0")
        for fp, wrapped in wraps[:2]:
            record += fp + wrapped
        os.pwrite(fd, record.ljust(SLOT, b"\0"), index * SLOT)

    def _unwrap(self, slot: _Slot) -> bytes | None:
        master = self._master()
        for fp, wrapped in slot.wraps:
            if fp == master.fingerprint[:FP_BYTES]:
                return master.open_bytes(wrapped, _wrap_context(slot.scope))
        return None

    # -- RunKeys -------------------------------------------------------------
    def create(self, txn: WriteTxn, scope: str) -> bytes:
        if len(scope.encode()) > SCOPE_BYTES:
            raise ValueError(f"run key scope {scope!r} is longer than {SCOPE_BYTES} bytes")
        key = new_key()
        master = self._master()
        wrapped = master.seal_bytes(key, _wrap_context(scope))
        with self._lock, _said(self.path, "nothing was written"):
            fd = self._open()
            try:
                index = self._take_free(fd)
                if index == self._records(fd) and index >= self._reclaim_at:
                    self._reclaim(fd, txn)
                    self._reclaim_at = max(RECLAIM_FLOOR, 2 * len(self._where))
                    index = self._take_free(fd)
                self._write(fd, index, scope, [(master.fingerprint[:FP_BYTES], wrapped)])
            finally:
                os.close(fd)
            self._where[scope] = index
            self._cache[scope] = key
        if self._durable:
            txn.on_commit(self._sync)
        return key

    def _sync(self) -> None:
        with _said(self.path, "the write was committed, but its run's key may not survive a crash"):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def get(self, txn: ReadTxn, scope: str) -> bytes | None:
        with self._lock, _said(self.path, "nothing was read"):
            found = self._cache.get(scope)
            if found is not None or not self.path.exists():
                return found
            fd = self._open()
            try:
                index = self._record_of(fd, scope)
                if index is None:
                    return None
                key = self._unwrap(self._parse(index, os.pread(fd, SLOT, index * SLOT)))
            finally:
                os.close(fd)
            if key is not None:
                self._cache[scope] = key
            return key

    def destroy(self, txn: WriteTxn, scope: str) -> None:
        def erase() -> None:
            self._erase(scope)

        txn.on_commit(erase)

    def _erase(self, scope: str) -> None:
        with self._lock:
            self._cache.pop(scope, None)
            if not self.path.exists():
                return
            fd = self._open()
            try:
                index = self._record_of(fd, scope)
                if index is not None:
                    os.pwrite(fd, EMPTY, index * SLOT)
                    if self._durable:
                        os.fsync(fd)
                    self._where.pop(scope, None)
                    self._free.append(index)
            finally:
                os.close(fd)

    def _reclaim(self, fd: int, txn: ReadTxn) -> int:
        freed = 0
        for slot in self._scan(fd):
            if not _holds_run_secrets(txn.get(_scope_object(slot.scope))):
                os.pwrite(fd, EMPTY, slot.index * SLOT)
                self._cache.pop(slot.scope, None)
                self._where.pop(slot.scope, None)
                self._free.append(slot.index)
                freed += 1
        if freed and self._durable:
            os.fsync(fd)
        return freed

    def reclaim(self, txn: WriteTxn) -> int:
        if not self.path.exists():
            return 0
        with self._lock:
            fd = self._open()
            try:
                return self._reclaim(fd, txn)
            finally:
                os.close(fd)

    def _rewrite(self, change: Callable[[_Slot], list[tuple[bytes, bytes]]]) -> None:
        if not self.path.exists():
            return
        with self._lock:
            fd = self._open()
            try:
                for slot in self._scan(fd):
                    self._write(fd, slot.index, slot.scope, change(slot))
                os.fsync(fd)
            finally:
                os.close(fd)

    def begin_rotation(self, old: SecretBox, new: SecretBox) -> None:
        def both(slot: _Slot) -> list[tuple[bytes, bytes]]:
            current = [w for w in slot.wraps if w[0] == old.fingerprint[:FP_BYTES]]
            if not current:  # not openable now: nothing to carry over
                return slot.wraps
            key = old.open_bytes(current[0][1], _wrap_context(slot.scope))
            return [current[0], (new.fingerprint[:FP_BYTES], new.seal_bytes(key, _wrap_context(slot.scope)))]

        self._rewrite(both)

    def rotate_in(self, txn: WriteTxn, old: SecretBox, new: SecretBox) -> int:
        return 0  # the file already holds both wraps (begin_rotation)

    def finish_rotation(self, current: SecretBox) -> None:
        def only_current(slot: _Slot) -> list[tuple[bytes, bytes]]:
            kept = [w for w in slot.wraps if w[0] == current.fingerprint[:FP_BYTES]]
            return kept or slot.wraps

        if any(len(slot.wraps) > 1 for slot in self._all()):
            self._rewrite(only_current)

    def _all(self) -> list[_Slot]:
        if not self.path.exists():
            return []
        with self._lock:
            fd = self._open()
            try:
                return self._scan(fd)
            finally:
                os.close(fd)

    def count(self) -> int:
        return len(self._all())


class StoreRunKeys:
    """Run keys in the store itself (``k/<scope>``), for engines where a file on one daemon would not do."""

    def __init__(self, master: Callable[[], SecretBox], store: Store) -> None:
        self._master = master
        self._store = store

    def create(self, txn: WriteTxn, scope: str) -> bytes:
        key = new_key()
        master = self._master()
        txn.put(RUN_KEY_PREFIX + scope.encode(), master.seal_bytes(key, _wrap_context(scope)))
        return key

    def get(self, txn: ReadTxn, scope: str) -> bytes | None:
        wrapped = txn.get(RUN_KEY_PREFIX + scope.encode())
        if wrapped is None:
            return None
        try:
            return self._master().open_bytes(wrapped, _wrap_context(scope))
        except WrongKey:
            return None

    def destroy(self, txn: WriteTxn, scope: str) -> None:
        txn.delete(RUN_KEY_PREFIX + scope.encode())

    def reclaim(self, txn: WriteTxn) -> int:
        gone = [key for key, _ in txn.scan(RUN_KEY_PREFIX) if not _holds_run_secrets(txn.get(b"o/" + key[2:]))]
        for key in gone:
            txn.delete(key)
        return len(gone)

    def begin_rotation(self, old: SecretBox, new: SecretBox) -> None:
        return None  # re-wrapped inside the rotation's transaction

    def rotate_in(self, txn: WriteTxn, old: SecretBox, new: SecretBox) -> int:
        count = 0
        for key, wrapped in list(txn.scan(RUN_KEY_PREFIX)):
            scope = key[len(RUN_KEY_PREFIX) :].decode()
            clear = old.open_bytes(wrapped, _wrap_context(scope))
            txn.put(key, new.seal_bytes(clear, _wrap_context(scope)))
            count += 1
        return count

    def finish_rotation(self, current: SecretBox) -> None:
        return None

    def count(self) -> int:
        with self._store.read() as txn:
            return sum(1 for _ in txn.scan(RUN_KEY_PREFIX))


class NoRunKeys:
    """Run keys of an application opened read-only: not at hand, and never touched.

    Every run key is wrapped by the data-directory key, which such an
    application does not hold; reading the slot file could open nothing, and
    writing it (a reclaim, a rotation's rewrap) could lose a live run's key.
    Each call refuses with ``problem``.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def _refused(self) -> FailedPrecondition:
        return FailedPrecondition(
            f"{self.problem}: no run's secrets can be opened or made, the store is opened read-only without its key",
            reason=NO_SECRET_KEY,
        )

    def create(self, txn: WriteTxn, scope: str) -> bytes:
        raise self._refused()

    def get(self, txn: ReadTxn, scope: str) -> bytes | None:
        raise self._refused()

    def destroy(self, txn: WriteTxn, scope: str) -> None:
        raise self._refused()

    def reclaim(self, txn: WriteTxn) -> int:
        raise self._refused()

    def begin_rotation(self, old: SecretBox, new: SecretBox) -> None:
        raise self._refused()

    def rotate_in(self, txn: WriteTxn, old: SecretBox, new: SecretBox) -> int:
        raise self._refused()

    def finish_rotation(self, current: SecretBox) -> None:
        raise self._refused()

    def count(self) -> int:
        raise self._refused()
