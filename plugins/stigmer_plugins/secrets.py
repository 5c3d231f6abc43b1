"""Encryption at rest for secret values, and the keys that make it possible.

Two kinds of key, both AES-256-GCM:

* **The data-directory key** (32 random bytes in ``<data_dir>/secret.key``,
  or supplied by ``STIGMER_SECRET_KEY_FILE`` / ``STIGMER_SECRET_KEY``)
  seals configuration secrets: Environment values, agent MCP headers.
  Ciphertexts are ``enc:v1:<base64(nonce|ct|tag)>``.
* **A run key** per execution context seals that run's values
  (``enc:r1:...``). It is created with the context, kept wrapped by the
  data-directory key, and destroyed when the run ends, so every copy of the
  run's values (the store's freed pages, a backup of the file taken
  mid-run) becomes ciphertext under a key that exists nowhere: deleting a
  value from LMDB does not remove its bytes (pages are copied on write and
  freed pages keep their contents), destroying its key does.

Where run keys live decides whether destroying them is real. LMDB would
keep a deleted key in a freed page just like the value, so beside an LMDB
store they live in a slot file (``run-keys``) of fixed-size records, and
destroying one overwrites its record in place and syncs the file. Another
engine (PostgreSQL, where several daemons share one database, so no local
file would do) keeps them in the store under ``k/<scope>``; a destroyed key
then lasts until the engine reclaims the row and recycles its log, which is
that engine's documented limit (docs/secrets.md).

The associated data binds each ciphertext to where it is stored, so a
ciphertext copied to another object or key does not decrypt.

**Key safety.** A new key file is written and synced (file and directory)
before anything is sealed with it. The first seal records the key's
fingerprint in the store (``m/secret-key``); an application that later finds
no key, or another one, refuses to start (``SecretKeyError``) rather than
make a new key and leave every sealed value unreadable. ``Secrets.rotate``
re-seals every value under a new key in one store transaction, with the new
key staged durably first and run keys wrapped by both keys until the commit,
so a crash at any point leaves a store that opens with one key or the other.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import Message

from stigmer_core import FailedPrecondition, StartupError, hookimpl
from stigmer_core.datadir import open_private
from stigmer_core.kinds.runtime import Registry
from stigmer_core.store import keys
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.protocol import ReadTxn, Store, WriteTxn

KEY_FILE = "secret.key"
RUN_KEYS_FILE = "run-keys"
KEY_ENV = "STIGMER_SECRET_KEY"
KEY_FILE_ENV = "STIGMER_SECRET_KEY_FILE"
STAGED_SUFFIX = ".new"
FINGERPRINT_KEY = b"m/secret-key"
RUN_KEY_PREFIX = b"k/"
PREFIX = "enc:v1:"
RUN_PREFIX = "enc:r1:"
EXTENSION = "stigmer.secrets"
SEALED_EXTENSION = "stigmer.secrets.sealed"
REDACTED = "<redacted>"
KEY_BYTES = 32
NONCE = 12
WRAPPED = NONCE + KEY_BYTES + 16

Reseal = Callable[[str, str], str]
"""``reseal(token, context) -> token``: what rotation does to one sealed value."""
SealedFields = Callable[[Message, Reseal], bool]
"""A kind's walk over its sealed values: apply ``reseal`` to each, return whether any changed."""


class SecretKeyError(StartupError):
    """The key at hand does not open the secrets the store holds (missing, different, malformed)."""


def fingerprint(key: bytes) -> bytes:
    """Names a key without revealing it (recorded in the store, shown in messages)."""
    return hmac.new(key, b"stigmer secret key fingerprint", hashlib.sha256).digest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, key: bytes, *, replace: bool = False) -> None:
    """Write ``key`` to ``path`` (0600) durably: the file and its directory entry are synced
    before this returns, so nothing is ever sealed with a key a crash could lose.

    Without ``replace`` an existing file is never overwritten (FileExistsError):
    two processes creating the first key race on ``link``, and one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{path} is not a {KEY_BYTES}-byte key ({len(key)} bytes)")
    return key


class SecretBox:
    """AES-GCM under one key, with the associated data naming where a value is stored."""

    def __init__(self, key: bytes, *, prefix: str = PREFIX) -> None:
        self._aead = AESGCM(key)
        self._prefix = prefix
        self.fingerprint = fingerprint(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        """The data directory's key file, created (durably) if it does not exist."""
        path = data_dir / KEY_FILE
        try:
            return cls(_read_key(path))
        except FileNotFoundError:
            pass
        key = AESGCM.generate_key(bit_length=256)
        try:
            write_key_file(path, key)
        except FileExistsError:  # another process made it first: use theirs
            return cls(_read_key(path))
        return cls(key)

    @staticmethod
    def is_encrypted(value: str) -> bool:
        """Whether ``value`` is a sealed value (under either kind of key)."""
        return value.startswith((PREFIX, RUN_PREFIX))

    def seal_bytes(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open_bytes(self, sealed: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], context)

    def encrypt(self, plaintext: str, context: str) -> str:
        return self._prefix + base64.b64encode(self.seal_bytes(plaintext.encode(), context.encode())).decode()

    def decrypt(self, token: str, context: str) -> str:
        if not token.startswith(self._prefix):
            raise FailedPrecondition("value is not sealed with this key")
        try:
            raw = base64.b64decode(token[len(self._prefix) :], validate=True)
            return self.open_bytes(raw, context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise FailedPrecondition("a secret value does not decrypt with this data directory's key") from None


# -- run keys ------------------------------------------------------------------


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


@attrs.define
class _Slot:
    index: int
    scope: str
    wraps: list[tuple[bytes, bytes]]  # (fingerprint prefix, wrapped key)


class FileRunKeys:
    """Run keys in fixed-size records of a file beside an LMDB store, overwritten in place.

    A record is ``scope | fp_a wrap_a | fp_b wrap_b`` (the second wrap only
    while a rotation is under way); an all-zero record is free. Writes are
    synced before they count: a created key before the transaction that uses
    it commits, a destroyed one right after the transaction that ends the run
    commits. A key created by a transaction that then failed is an orphan
    that ``reclaim`` frees (at startup, and when no record is free).
    """

    def __init__(self, path: Path, master: Callable[[], SecretBox]) -> None:
        self.path = path
        self._master = master
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    # -- file access (under self._lock and an exclusive lock on the file) --
    def _open(self) -> int:
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def _slots(fd: int) -> Iterator[_Slot]:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        for index in range(len(data) // SLOT):
            record = data[index * SLOT : (index + 1) * SLOT]
            if record == EMPTY:
                continue
            wraps = []
            for offset in (SCOPE_BYTES, SCOPE_BYTES + WRAP_SLOT):
                part = record[offset : offset + WRAP_SLOT]
                if part != bytes(WRAP_SLOT):
                    wraps.append((part[:FP_BYTES], part[FP_BYTES:]))
            yield _Slot(index, record[:SCOPE_BYTES].rstrip(b"\0").decode(), wraps)

    @staticmethod
    def _write(fd: int, index: int, scope: str, wraps: list[tuple[bytes, bytes]]) -> None:
        record = scope.encode().ljust(SCOPE_BYTES, b"\0")
        for fp, wrapped in wraps[:2]:
            record += fp + wrapped
        os.pwrite(fd, record.ljust(SLOT, b"\0"), index * SLOT)

    @staticmethod
    def _free(fd: int) -> int:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        for index in range(len(data) // SLOT):
            if data[index * SLOT : (index + 1) * SLOT] == EMPTY:
                return index
        return len(data) // SLOT

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
        key = AESGCM.generate_key(bit_length=256)
        master = self._master()
        wrapped = master.seal_bytes(key, _wrap_context(scope))
        with self._lock:
            fd = self._open()
            try:
                index = self._free(fd)
                if index * SLOT == os.fstat(fd).st_size and self._reclaim(fd, txn):
                    index = self._free(fd)
                self._write(fd, index, scope, [(master.fingerprint[:FP_BYTES], wrapped)])
                os.fsync(fd)
            finally:
                os.close(fd)
            self._cache[scope] = key
        return key

    def get(self, txn: ReadTxn, scope: str) -> bytes | None:
        with self._lock:
            found = self._cache.get(scope)
            if found is not None:
                return found
            if not self.path.exists():
                return None
            fd = self._open()
            try:
                for slot in self._slots(fd):
                    if slot.scope == scope:
                        key = self._unwrap(slot)
                        if key is not None:
                            self._cache[scope] = key
                        return key
            finally:
                os.close(fd)
        return None

    def destroy(self, txn: WriteTxn, scope: str) -> None:
        def erase() -> None:
            self._erase({scope})

        txn.on_commit(erase)

    def _erase(self, scopes: set[str]) -> int:
        with self._lock:
            for scope in scopes:
                self._cache.pop(scope, None)
            if not self.path.exists():
                return 0
            fd = self._open()
            try:
                erased = 0
                for slot in self._slots(fd):
                    if slot.scope in scopes:
                        os.pwrite(fd, EMPTY, slot.index * SLOT)
                        erased += 1
                if erased:
                    os.fsync(fd)
                return erased
            finally:
                os.close(fd)

    def _reclaim(self, fd: int, txn: ReadTxn) -> int:
        freed = 0
        for slot in self._slots(fd):
            if not _holds_run_secrets(txn.get(_scope_object(slot.scope))):
                os.pwrite(fd, EMPTY, slot.index * SLOT)
                self._cache.pop(slot.scope, None)
                freed += 1
        if freed:
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
                for slot in list(self._slots(fd)):
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
                return list(self._slots(fd))
            finally:
                os.close(fd)

    def count(self) -> int:
        return len(self._all())


class StoreRunKeys:
    """Run keys in the store itself (``k/<scope>``), for engines where a file on one daemon would not do."""

    def __init__(self, master: Callable[[], SecretBox]) -> None:
        self._master = master

    def create(self, txn: WriteTxn, scope: str) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        master = self._master()
        txn.put(RUN_KEY_PREFIX + scope.encode(), master.seal_bytes(key, _wrap_context(scope)))
        return key

    def get(self, txn: ReadTxn, scope: str) -> bytes | None:
        wrapped = txn.get(RUN_KEY_PREFIX + scope.encode())
        if wrapped is None:
            return None
        try:
            return self._master().open_bytes(wrapped, _wrap_context(scope))
        except InvalidTag:
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

    def count(self) -> int:  # pragma: no cover - reported by the file engine only
        return 0


# -- the application's keys ------------------------------------------------------


@attrs.frozen
class KeySource:
    """Where the data-directory key comes from."""

    path: Path | None
    """The key file (the data directory's, or ``STIGMER_SECRET_KEY_FILE``); None for the env var or memory."""
    env: bytes | None = None
    """The key given in ``STIGMER_SECRET_KEY``."""

    @property
    def where(self) -> str:
        if self.env is not None:
            return f"the key in ${KEY_ENV}"
        return f"the key file {self.path}" if self.path is not None else "an in-memory key"

    @classmethod
    def resolve(cls, data_dir: Path | None, environ: Mapping[str, str]) -> KeySource:
        given = environ.get(KEY_ENV, "").strip()
        if given:
            try:
                key = base64.b64decode(given, validate=True)
            except binascii.Error:
                raise SecretKeyError(f"${KEY_ENV} is not base64") from None
            if len(key) != KEY_BYTES:
                raise SecretKeyError(f"${KEY_ENV} must be {KEY_BYTES} bytes in base64 ({len(key)} given)")
            return cls(path=None, env=key)
        from_file = environ.get(KEY_FILE_ENV, "").strip()
        if from_file:
            return cls(path=Path(from_file).expanduser())
        return cls(path=None if data_dir is None else data_dir / KEY_FILE)

    @property
    def staged(self) -> Path | None:
        """Where a rotation stages the next key before its commit."""
        return None if self.path is None else self.path.with_name(self.path.name + STAGED_SUFFIX)


def _recorded(store: Store) -> bytes | None:
    with store.read() as txn:
        return txn.get(FINGERPRINT_KEY)


def _hex(fp: bytes) -> str:
    return fp[:8].hex()


class Secrets:
    """One application's keys: the data-directory key and its run keys."""

    def __init__(self, master: SecretBox, source: KeySource, runs_factory: Callable[[Secrets], RunKeys]) -> None:
        self.master = master
        self.source = source
        self._recorded = False
        self.runs = runs_factory(self)

    @classmethod
    def open(cls, store: Store, data_dir: Path | None, environ: Mapping[str, str] | None = None) -> Secrets:
        """The key for ``store``, checked against the fingerprint the store recorded."""
        source = KeySource.resolve(data_dir, os.environ if environ is None else environ)
        recorded = _recorded(store)
        master = cls._load(source, recorded)

        def runs_factory(secrets: Secrets) -> RunKeys:
            def current() -> SecretBox:
                return secrets.master

            if isinstance(store, LmdbStore):
                return FileRunKeys(store.path / RUN_KEYS_FILE, current)
            return StoreRunKeys(current)

        secrets = cls(master, source, runs_factory)
        secrets.runs.finish_rotation(master)
        store.transact(secrets.runs.reclaim)
        return secrets

    @staticmethod
    def _load(source: KeySource, recorded: bytes | None) -> SecretBox:
        if source.env is not None:
            key: bytes | None = source.env
        elif source.path is None:
            return SecretBox(AESGCM.generate_key(bit_length=256))  # nothing outlives the application
        else:
            key = _finish_staged(source, recorded)
        if key is None:
            if recorded is not None:
                raise SecretKeyError(
                    f"{source.where} is missing, but the store holds secrets sealed with key {_hex(recorded)}; "
                    f"restore that key file (or point ${KEY_FILE_ENV} or ${KEY_ENV} at it). Starting with a new key "
                    "would leave every secret unreadable, so the store is not opened."
                )
            assert source.path is not None
            key = AESGCM.generate_key(bit_length=256)
            try:
                write_key_file(source.path, key)
            except FileExistsError:  # another process made it first: use theirs
                key = _read_key(source.path)
            return SecretBox(key)
        box = SecretBox(key)
        if recorded is not None and recorded != box.fingerprint:
            raise SecretKeyError(
                f"{source.where} is key {_hex(box.fingerprint)}, but the store's secrets are sealed with key "
                f"{_hex(recorded)}; give the key they were sealed with (the store is not opened)"
            )
        return box

    def record(self, txn: WriteTxn) -> None:
        """Note, in the sealing transaction, which key sealed the store's secrets."""
        if self._recorded:
            return
        if txn.get(FINGERPRINT_KEY) is None:
            txn.put(FINGERPRINT_KEY, self.master.fingerprint)
        else:
            self._recorded = True

    def seal(self, txn: WriteTxn, plaintext: str, context: str) -> str:
        """Seal a configuration secret with the data-directory key."""
        self.record(txn)
        return self.master.encrypt(plaintext, context)

    def new_run_box(self, txn: WriteTxn, scope: str) -> SecretBox:
        """A new run key for ``scope`` (``<key_prefix>/<id>``), kept until ``end_run``."""
        self.record(txn)
        return SecretBox(self.runs.create(txn, scope), prefix=RUN_PREFIX)

    def run_box(self, txn: ReadTxn, scope: str) -> SecretBox | None:
        """The run key of ``scope``; None once the run has ended (the key is destroyed)."""
        key = self.runs.get(txn, scope)
        return None if key is None else SecretBox(key, prefix=RUN_PREFIX)

    def end_run(self, txn: WriteTxn, scope: str) -> None:
        """Destroy ``scope``'s run key once ``txn`` commits: its values are then unrecoverable."""
        self.runs.destroy(txn, scope)

    def rotate(self, store: Store, registry: Registry, new_key: bytes, stage: Callable[[bytes], None]) -> Rotation:
        """Re-seal every sealed value under ``new_key`` in one transaction.

        ``stage(new_key)`` must store the new key durably where the next start
        will find it (as a staged file beside the current one); it runs before
        the commit, so the committed fingerprint always has a key on disk.
        """
        old, new = self.master, SecretBox(new_key)
        walkers: Mapping[str, SealedFields] = registry.extensions.get(SEALED_EXTENSION, {})
        self.runs.begin_rotation(old, new)
        stage(new_key)

        def reseal(token: str, context: str) -> str:
            if not token.startswith(PREFIX):
                return token
            return new.encrypt(old.decrypt(token, context), context)

        def run(txn: WriteTxn) -> Rotation:
            objects = 0
            for kind_name, walk in sorted(walkers.items()):
                kind = registry.find(kind_name)
                if kind is None:
                    continue
                for key, raw in list(txn.scan(keys.object_prefix(kind.key_prefix))):
                    obj = kind.parse(raw)
                    if walk(obj, reseal):
                        txn.put(key, obj.SerializeToString())
                        objects += 1
            wrapped = self.runs.rotate_in(txn, old, new)
            txn.put(FINGERPRINT_KEY, new.fingerprint)
            return Rotation(objects=objects, run_keys=wrapped, old=_hex(old.fingerprint), new=_hex(new.fingerprint))

        done = store.transact(run)
        self.master = new
        self._recorded = True
        self.runs.finish_rotation(new)
        return attrs.evolve(done, run_keys=done.run_keys or self.runs.count())


@attrs.frozen
class Rotation:
    objects: int
    """Objects whose sealed values were re-sealed."""
    run_keys: int
    """Live runs' keys re-wrapped."""
    old: str
    new: str


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def install_staged(source: KeySource) -> None:
    """Make a committed rotation's staged key the key file.

    The old key's bytes are overwritten where they lie first: with it gone,
    old copies of values it sealed (freed store pages, the event log of an
    older version) can no longer be opened. A crash in between is safe: the
    staged key, which the store's fingerprint names, is installed first
    thing at the next start.
    """
    assert source.path is not None and source.staged is not None
    if source.path.exists():
        fd = os.open(source.path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(os.fstat(fd).st_size), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(source.staged, source.path)
    _fsync_dir(source.path.parent)


def _finish_staged(source: KeySource, recorded: bytes | None) -> bytes | None:
    """The key file's key, after completing or discarding a rotation a crash interrupted."""
    assert source.path is not None and source.staged is not None
    if source.staged.exists():
        staged = _read_key(source.staged)
        if recorded is not None and recorded == fingerprint(staged):
            install_staged(source)  # the rotation committed: its key is the key
            return staged
        source.staged.unlink()  # the rotation never committed
    try:
        return _read_key(source.path)
    except FileNotFoundError:
        return None


def secrets(registry: Registry) -> Secrets:
    found = registry.extensions.get(EXTENSION)
    if not isinstance(found, Secrets):  # pragma: no cover - stigmer_configure always runs first
        raise FailedPrecondition("secrets are not configured for this application")
    return found


def box(registry: Registry) -> SecretBox:
    """The data-directory key of this application."""
    return secrets(registry).master


def declare_sealed(registry: Registry, kind: str, walk: SealedFields) -> None:
    """Say where ``kind`` keeps values sealed with the data-directory key, so rotation finds them."""
    registry.extensions.setdefault(SEALED_EXTENSION, {})[kind] = walk


@hookimpl
def stigmer_configure(registry: Registry, data_dir: Path | None, store: Store) -> None:
    registry.extensions[EXTENSION] = Secrets.open(store, data_dir)


__all__ = [
    "EXTENSION",
    "KEY_ENV",
    "KEY_FILE",
    "KEY_FILE_ENV",
    "PREFIX",
    "REDACTED",
    "RUN_PREFIX",
    "Rotation",
    "SecretBox",
    "SecretKeyError",
    "Secrets",
    "box",
    "declare_sealed",
    "fingerprint",
    "install_staged",
    "new_key",
    "secrets",
    "write_key_file",
]
