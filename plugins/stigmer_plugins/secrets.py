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

Where run keys live decides whether destroying them is real
(``run_keys``: a slot file overwritten in place beside LMDB, the store
itself on other engines). The sealing itself is ``secret_box``; the key
file, its sources and its safe replacement are ``secret_key``.

**Key safety.** A new key file is written and synced (file and directory)
before anything is sealed with it. The first seal records the key's
fingerprint in the store (``m/secret-key``), in its own transaction; an
application that later finds no key, or another one, refuses to start
(``SecretKeyError``) rather than make a new key and leave every sealed value
unreadable. One already running when another key was recorded (a daemon
sharing the store that started before anything was, or one left running
through a rotation) is refused at every seal and unseal instead: each reads
the recorded fingerprint in its transaction (``Secrets.check``), so a store
never holds secrets under two keys. ``Secrets.rotate`` re-seals every value
under a new key in one store transaction, only on a store that records the
key being replaced, with the new key staged durably first and run keys
wrapped by both keys until the commit, so a crash at any point leaves a
store that opens with one key or the other. On a store daemons share (any
engine but LMDB) a start that makes a new key file warns that every daemon of
the database must hold a copy of it (``shared_key``).

**A command on a shared store.** A command's application (``transient``: the
CLI's in-process commands, ``connect()``) on a store daemons share uses the key
at hand only when it opens the store (the store records it), or when the store
records none yet and the key was given on purpose (``STIGMER_SECRET_KEY`` or
``STIGMER_SECRET_KEY_FILE``), never the data directory's own key file: a laptop's,
moving its local store in, sealed its secrets, was recorded, and locked every
daemon out. Otherwise it runs without a key, as a read-only one does, but may write
what needs no secret (an API token, an org's removal): the key is the daemons',
so a command neither makes a key file (the first token of a team server, made
before any daemon, left one in the operator's data directory that every daemon
was then told to copy) nor refuses to start for lacking theirs.

**Without the key.** An application opened ``read_only`` (the store whose key
is lost, exported) gets a ``Secrets`` that holds no key: its master is a
``LockedBox`` and its run keys ``NoRunKeys``, both refusing with what is wrong
with the key (FailedPrecondition). Opening it writes nothing: no key file is
made, a staged rotation is neither finished nor discarded, and the run-keys
file is not opened, so every live run's key stays as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import attrs
from google.protobuf.message import Message

from stigmer_core import FailedPrecondition, hookimpl
from stigmer_core.auth.access import Access, Caller
from stigmer_core.kinds.runtime import Registry
from stigmer_core.store import keys
from stigmer_core.store.protocol import ReadTxn, SharedByDaemons, Store, WriteTxn
from stigmer_plugins.run_keys import RUN_KEYS_FILE, FileRunKeys, NoRunKeys, RunKeys, StoreRunKeys
from stigmer_plugins.secret_box import NO_SECRET_KEY, PREFIX, RUN_PREFIX, LockedBox, SecretBox, fingerprint, new_key
from stigmer_plugins.secret_key import (
    KEY_ENV,
    KEY_FILE,
    KEY_FILE_ENV,
    STAGED_SUFFIX,
    KeySource,
    SecretKeyError,
    install_staged,
    read_key,
    write_key_file,
)
from stigmer_plugins.shared_key import warn_new_key

if TYPE_CHECKING:
    from stigmer_core.store.lmdb_store import LmdbStore

FINGERPRINT_KEY = b"m/secret-key"
KEY_MISMATCH = "SECRET_KEY_MISMATCH"
"""The reason of a refusal by a daemon holding another key than the one the store's secrets are
sealed with (another daemon's first seal, or a rotation since it started)."""
log = logging.getLogger(__name__)
EXTENSION = "stigmer.secrets"
SEALED_EXTENSION = "stigmer.secrets.sealed"
REDACTED = "<redacted>"

Reseal = Callable[[str, str], str]
"""``reseal(token, context) -> token``: what rotation does to one sealed value."""
SealedFields = Callable[[Message, Reseal], bool]
"""A kind's walk over its sealed values: apply ``reseal`` to each, return whether any changed."""


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
        self._said: set[bytes] = set()
        self.runs = runs_factory(self)

    @classmethod
    def open(
        cls,
        store: Store,
        data_dir: Path | None,
        environ: Mapping[str, str] | None = None,
        *,
        read_only: bool = False,
        transient: bool = False,
    ) -> Secrets:
        """The key for ``store``, checked against the fingerprint the store recorded.

        ``read_only``: no key at all (see the module), whatever the key at hand is.
        ``transient``: a command's application (see the module, A command on a shared store).
        """
        environ = os.environ if environ is None else environ
        recorded = _recorded(store)
        if read_only:
            return cls.locked(_problem(data_dir, environ, recorded))
        if transient and _shared(store):
            lacking = _command_lacks(store, data_dir, environ, recorded)
            if lacking is not None:  # run keys stay in the store: an ended run's is still destroyed
                box = LockedBox(lacking, "this command runs without the key")
                return cls(box, KeySource(path=None), lambda secrets: StoreRunKeys(lambda: secrets.master, store))
        source = KeySource.resolve(data_dir, environ)
        master, made = cls._load(source, recorded, _database(store))
        if made and source.path is not None and _shared(store):
            warn_new_key(store, source.path, KEY_FILE_ENV)  # the other daemons need it too

        def runs_factory(secrets: Secrets) -> RunKeys:
            def current() -> SecretBox:
                return secrets.master

            if _embedded(store):
                return FileRunKeys(store.path / RUN_KEYS_FILE, current, durable=store.durable)
            return StoreRunKeys(current, store)

        secrets = cls(master, source, runs_factory)
        secrets.runs.finish_rotation(master)
        store.transact(secrets.runs.reclaim)
        return secrets

    @classmethod
    def locked(cls, problem: str) -> Secrets:
        """Secrets without a key: sealing, opening and run keys all refuse, naming ``problem``."""
        return cls(LockedBox(problem), KeySource(path=None), lambda _: NoRunKeys(problem))

    @staticmethod
    def _load(source: KeySource, recorded: bytes | None, store: str = "") -> tuple[SecretBox, bool]:
        """The key, and whether this start made its key file."""
        if source.env is not None:
            key: bytes | None = source.env
        elif source.path is None:
            return SecretBox(new_key()), False  # nothing outlives the application
        else:
            key = _finish_staged(source, recorded)
        if key is None:
            if recorded is not None:
                problem = _missing(source, recorded, store)
                raise SecretKeyError(
                    f"{problem}; restore that key file (or point ${KEY_FILE_ENV} or ${KEY_ENV} at it). Starting "
                    "with a new key would leave every secret unreadable, so the store is not opened.",
                    problem,
                )
            assert source.path is not None
            key = new_key()
            try:
                write_key_file(source.path, key)
            except FileExistsError:  # another process made it first: use theirs
                return SecretBox(read_key(source.path)), False
            return SecretBox(key), True
        box = SecretBox(key)
        if recorded is not None and recorded != box.fingerprint:
            problem = _different(source, box.fingerprint, recorded, store)
            raise SecretKeyError(f"{problem}; give the key they were sealed with (the store is not opened)", problem)
        return box, False

    def check(self, txn: ReadTxn) -> SecretBox:
        """The key, once ``txn`` shows the store records it (or no key yet) as the one its secrets are sealed with.

        Asked in every transaction that seals or opens a secret, never remembered: a daemon
        sharing the store may have recorded its own key (the first seal) since this
        application started with nothing recorded, or a rotation a new one while this
        daemon kept running with the old key. Sealing then would leave the store with
        secrets under two keys, each unreadable to the daemons holding the other.
        """
        self._refuse_other(txn.get(FINGERPRINT_KEY))
        return self.master

    def _refuse_other(self, recorded: bytes | None) -> None:
        master = self.master
        if recorded is None or isinstance(master, LockedBox) or recorded == master.fingerprint:
            return  # a locked box refuses on its own, naming what is wrong with the key
        problem = _not_the_store_key(self.source, master.fingerprint, recorded)
        if recorded not in self._said:  # an operator's to fix: logged once per key recorded, not per call
            self._said.add(recorded)
            log.error("%s", problem)
        raise FailedPrecondition(problem, reason=KEY_MISMATCH)

    def record(self, txn: WriteTxn) -> None:
        """In the sealing transaction: refuse a key the store does not record, or record this one.

        Writers are serialized (LMDB's one writer, PostgreSQL's revision lock), so of two
        daemons sealing their first secret at once with different keys, the second finds
        the first's fingerprint here and is refused: both cannot record.
        """
        recorded = txn.get(FINGERPRINT_KEY)
        self._refuse_other(recorded)
        if recorded is None:
            txn.put(FINGERPRINT_KEY, self.master.fingerprint)

    def seal(self, txn: WriteTxn, plaintext: str, context: str) -> str:
        """Seal a configuration secret with the data-directory key."""
        self.record(txn)
        return self.master.encrypt(plaintext, context)

    def unseal(self, txn: ReadTxn, token: str, context: str) -> str:
        """Open a configuration secret, once ``txn`` shows the store's key is this application's."""
        return self.check(txn).decrypt(token, context)

    def new_run_box(self, txn: WriteTxn, scope: str) -> SecretBox:
        """A new run key for ``scope`` (``<key_prefix>/<id>``), kept until ``end_run``."""
        self.record(txn)
        return SecretBox(self.runs.create(txn, scope), prefix=RUN_PREFIX)

    def run_box(self, txn: ReadTxn, scope: str) -> SecretBox | None:
        """The run key of ``scope``; None once the run has ended (the key is destroyed)."""
        self.check(txn)
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
        with store.read() as view:  # before anything is staged: a refusal leaves no file behind
            self._rotatable(view, registry, walkers, store)
        self.runs.begin_rotation(old, new)
        stage(new_key)

        def reseal(token: str, context: str) -> str:
            if not token.startswith(PREFIX):
                return token
            return new.encrypt(old.decrypt(token, context), context)

        def run(txn: WriteTxn) -> Rotation:
            self._rotatable(txn, registry, walkers, store)  # again where it counts: in the rotating transaction
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

        try:
            done = store.transact(run)
        except BaseException:
            self.runs.finish_rotation(old)  # nothing committed: the run keys keep only the wraps the old key opens
            raise
        self.master = new
        self.runs.finish_rotation(new)
        return attrs.evolve(done, run_keys=done.run_keys or self.runs.count())

    def _rotatable(self, txn: ReadTxn, registry: Registry, walkers: Mapping[str, SealedFields], store: Store) -> None:
        """Refuse a rotation of a store whose secrets this key does not seal: re-sealing nothing and
        then replacing the key file would strand the secrets of the store the key really seals.

        A store records its key with its first seal; one that records none is rotated only if
        it holds sealed values all the same (sealed before fingerprints were recorded).
        """
        recorded = txn.get(FINGERPRINT_KEY)
        if recorded is None and not _holds_sealed(txn, registry, walkers):
            raise FailedPrecondition(
                f"{_describe(store)} holds no secret sealed with {self.source.where} (no key fingerprint is recorded "
                "in it), so there is nothing to rotate and the key is left as it is; if the secrets are in a team "
                "server's database, name it (--store, $STIGMER_STORE or the config file's store)"
            )
        master = self.master
        if recorded is not None and not isinstance(master, LockedBox) and recorded != master.fingerprint:
            raise FailedPrecondition(
                f"not rotated: {_describe(store)} records key {_hex(recorded)}, not {self.source.where}'s key "
                f"{_hex(master.fingerprint)} (another rotation, or a daemon with another key, recorded it since); "
                "nothing was written and the key file is left as it is"
            )
        self._refuse_other(recorded)


def _holds_sealed(txn: ReadTxn, registry: Registry, walkers: Mapping[str, SealedFields]) -> bool:
    found: list[str] = []

    def note(token: str, context: str) -> str:
        if token.startswith(PREFIX):
            found.append(token)
        return token

    for kind_name, walk in sorted(walkers.items()):
        kind = registry.find(kind_name)
        if kind is None:
            continue
        for _, raw in txn.scan(keys.object_prefix(kind.key_prefix)):
            walk(kind.parse(raw), note)
            if found:
                return True
    return False


@attrs.frozen
class Rotation:
    objects: int
    """Objects whose sealed values were re-sealed."""
    run_keys: int
    """Live runs' keys re-wrapped."""
    old: str
    new: str


def _missing(source: KeySource, recorded: bytes, store: str = "") -> str:
    """``store``: which store, when it is a database (``_database``): one set by $STIGMER_STORE
    beside a local data directory was taken for the directory's own, and the key for the wrong one."""
    return f"{source.where} is missing, but the store holds secrets sealed with key {_hex(recorded)}{store}"


def _different(source: KeySource, given: bytes, recorded: bytes, store: str = "") -> str:
    return f"{source.where} is key {_hex(given)}, but the store's secrets are sealed with key {_hex(recorded)}{store}"


def _database(store: Store) -> str:
    """`` (the store: the database …)`` for a store that is not the data directory's own, else ""."""
    url = None if _embedded(store) else getattr(store, "url", None)  # PostgreSQL's, without its password
    return f" (the store: the database {url})" if isinstance(url, str) else ""


def _not_the_store_key(source: KeySource, given: bytes, recorded: bytes) -> str:
    return (
        f"{source.where} is key {_hex(given)}, but the store's secrets are sealed with key {_hex(recorded)} (recorded "
        "by another daemon sharing the store, or by a key rotation since this daemon started): no secret is sealed or "
        f"opened with key {_hex(given)}, and nothing was written. Stop this daemon, give it the key file of key "
        f"{_hex(recorded)} (copy it from a daemon that holds it, or point ${KEY_FILE_ENV} at it) and start it again"
    )


def _shared(store: Store) -> bool:
    """Whether other daemons serve ``store``'s database too (``SharedByDaemons``), so a key this
    daemon made concerns them: a store engine only this process writes (LMDB, a plugin's
    single-file store) keeps its new key to itself, and saying otherwise sent its user looking
    for daemons that do not exist."""
    return isinstance(store, SharedByDaemons) and store.shared_by_daemons


def _embedded(store: Store) -> TypeGuard[LmdbStore]:
    """Whether ``store`` is an embedded LMDB store; LMDB is imported here, not with this plugin,
    which a client only listing the kinds (the CLI of a daemon) loads without opening a store."""
    from stigmer_core.store.lmdb_store import LmdbStore

    return isinstance(store, LmdbStore)


def _describe(store: Store) -> str:
    if _embedded(store):
        return f"the store in {store.path}"
    url = getattr(store, "url", None)  # PostgreSQL's, without its password
    return f"the store {url}" if isinstance(url, str) else "the store"


def _problem(data_dir: Path | None, environ: Mapping[str, str], recorded: bytes | None) -> str:
    """What keeps a read-only application from the key, found by reading only (no key file is
    made, no staged rotation finished): what ``Secrets.open`` would refuse to start with."""
    try:
        source = KeySource.resolve(data_dir, environ)
        if source.env is not None:
            key: bytes | None = source.env
        elif source.path is None:
            return "an application without a data directory has no key to read"
        else:
            key = _key_file(source, recorded)
    except SecretKeyError as exc:  # a malformed key
        return exc.problem
    if recorded is None:
        return f"the store holds no sealed secret yet, and {source.where} is not used by a read-only application"
    if key is None:
        return _missing(source, recorded)
    if fingerprint(key) != recorded:
        return _different(source, fingerprint(key), recorded)
    return f"{source.where} is the store's key, but it is not used by a read-only application"


def _command_lacks(store: Store, data_dir: Path | None, environ: Mapping[str, str], recorded: bytes | None) -> str | None:
    """Why a command on a shared store runs without a key (None: the key at hand opens it). Found
    by reading only: a command makes no key file, and finishes no staged rotation, for a store
    whose key is its daemons'."""
    try:
        source = KeySource.resolve(data_dir, environ)
        if source.env is not None:
            key: bytes | None = source.env
        elif source.path is None:
            key = None
        else:
            key = _key_file(source, recorded)
    except SecretKeyError as exc:  # a malformed key
        where = exc.problem
    else:
        given = bool(environ.get(KEY_ENV, "").strip() or environ.get(KEY_FILE_ENV, "").strip())
        if key is not None and (fingerprint(key) == recorded or (recorded is None and given)):
            return None
        if key is None:
            where = f"{source.where} is not there"
        elif recorded is None:  # the daemons' key is recorded by their first seal: none yet, and this is not theirs
            where = (
                f"it records no key yet, and {source.where} is this machine's own, which a command does not make "
                f"the store's: that is the key of its daemons, which record it with their first secret"
            )
        else:
            where = _different(source, fingerprint(key), recorded)
    return (
        f"this command holds no key of {_describe(store)} ({where}), and makes none for a store its daemons "
        f"share: point ${KEY_FILE_ENV} at a copy of the key file they hold (a daemon makes one at its first start), "
        "or make this call through a daemon"
    )


def _key_file(source: KeySource, recorded: bytes | None) -> bytes | None:
    """The key a start would use (a committed rotation's staged key, else the key file), left where it lies."""
    assert source.path is not None and source.staged is not None
    for path in (source.staged, source.path):
        try:
            key = read_key(path)
        except FileNotFoundError:
            continue
        if path == source.path or (recorded is not None and fingerprint(key) == recorded):
            return key
    return None


def _finish_staged(source: KeySource, recorded: bytes | None) -> bytes | None:
    """The key file's key, after completing or discarding a rotation a crash interrupted."""
    assert source.path is not None and source.staged is not None
    try:
        current: bytes | None = read_key(source.path)
    except FileNotFoundError:
        current = None
    if source.staged.exists():
        staged = read_key(source.staged)
        if recorded is not None and recorded == fingerprint(staged):
            install_staged(source)  # the rotation committed: its key is the key
            return staged
        if recorded is None or (current is not None and fingerprint(current) == recorded):
            source.staged.unlink()  # the rotation never committed, and the key file opens the store
        # else the start is refused (no key that opens the store): the staged key stays, as evidence
        # and perhaps the only copy of a key some run keys are wrapped by
    return current


def secrets(registry: Registry) -> Secrets:
    found = registry.extensions.get(EXTENSION)
    if not isinstance(found, Secrets):  # pragma: no cover - stigmer_configure always runs first
        raise FailedPrecondition("secrets are not configured for this application")
    return found


def box(registry: Registry) -> SecretBox:
    """The data-directory key of this application."""
    return secrets(registry).master


def keeps_sealed(caller: Caller, org: str, sealed: SecretBox, token: str, clear: str, context: str) -> bool:
    """Whether a write that sends ``clear`` keeps the stored ciphertext ``token`` (same value).

    Asked only for a caller who may read the secret anyway (RUN access in the org: runners
    and admins, and the local administrator). For anyone else the answer would tell whether a
    guess is the secret, through whether the write changed anything (a dry run answers that
    and writes nothing), so a clear value from them is always sealed anew.
    """
    if not caller.can(Access.RUN, org):
        return False
    try:
        return sealed.decrypt(token, context) == clear
    except FailedPrecondition:  # sealed under another key: store the new value
        return False


def declare_sealed(registry: Registry, kind: str, walk: SealedFields) -> None:
    """Say where ``kind`` keeps values sealed with the data-directory key, so rotation finds them."""
    registry.extensions.setdefault(SEALED_EXTENSION, {})[kind] = walk


@hookimpl
def stigmer_configure(registry: Registry, data_dir: Path | None, store: Store, read_only: bool, transient: bool) -> None:
    registry.extensions[EXTENSION] = Secrets.open(store, data_dir, read_only=read_only, transient=transient)


__all__ = [
    "EXTENSION",
    "KEY_ENV",
    "KEY_FILE",
    "KEY_FILE_ENV",
    "KEY_MISMATCH",
    "NO_SECRET_KEY",
    "PREFIX",
    "REDACTED",
    "RUN_KEYS_FILE",
    "RUN_PREFIX",
    "STAGED_SUFFIX",
    "LockedBox",
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
