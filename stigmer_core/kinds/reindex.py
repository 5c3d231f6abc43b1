"""Indexes kept true across plugin versions: recorded, compared at startup, rebuilt, checked.

An index a plugin adds in a later version has no entries for objects stored
before it, and one whose ``values`` changed has wrong ones. So the store
records, per kind, the indexes its entries were written for (names and
``IndexSpec.version``); at startup each kind's declaration is compared with
that record, and every index that is new or changed is rebuilt from the
kind's stored objects (and one no longer declared is removed) in one
transaction, before anything is served. ``check`` compares every index of
every kind with what its objects say, and repairs it on request
(``stigmer doctor``).

The key and id prefixes each kind's objects were written with are recorded
too: a plugin release that changes either while objects are stored under
the old ones is refused at startup (its objects would silently vanish from
every query), naming the way to move them.

The release of the plugin that reconciled each kind is recorded with its
prefixes, and a start with an older one is refused (kinds/releases.py).

Only the Store protocol is used, so every engine gets the same behaviour.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Collection, Iterator
from typing import Any

import attrs
from google.protobuf.message import Message

from stigmer_core.errors import (
    InvalidArgument,
    KindDowngrade,
    KindServedOtherwise,
    PluginFault,
    RegistryError,
    StartupError,
)
from stigmer_core.kinds import releases
from stigmer_core.kinds.runtime import LABEL_INDEX, KindRuntime, Registry
from stigmer_core.store import keys
from stigmer_core.store.protocol import ReadsAhead, ReadTxn, Store, WriteTxn

log = logging.getLogger(__name__)
Families = dict[str, dict[bytes, bytes]]

SLUG_INDEX = "_slug"
"""How reports name the slug index (``s/<key_prefix>/<org>/<slug>``)."""
OWNERS = "_owners"
"""How reports name the ownership entries (``r/<owner id>/<key_prefix>/<id>``)."""
REFERENCES = "_references"
"""How reports name the reverse-reference entries (``q/<target id>/<key_prefix>/<id>``)."""


def declared(kind: KindRuntime) -> dict[str, int]:
    """Index name -> version, as this kind is declared now (labels included); a kind with
    declared references records them too, so entries for a reference a release adds are made."""
    found = {LABEL_INDEX: 1, **{index.name: index.version for index in kind.indexes}}
    if kind.references:
        named = ",".join(sorted(f"{ref.spec.field}>{ref.spec.kind}" for ref in kind.references))
        found[REFERENCES] = zlib.crc32(named.encode()) or 1
    return found


def recorded(txn: ReadTxn, kind: KindRuntime) -> dict[str, int] | None:
    """What the stored entries were written for; None when nothing was recorded."""
    raw = txn.get(keys.index_record_key(kind.key_prefix))
    if raw is None:
        return None
    found: dict[str, int] = json.loads(raw)["indexes"]
    return found


def _prefixes(kind: KindRuntime) -> dict[str, str]:
    return {"key_prefix": kind.key_prefix, "id_prefix": kind.id_prefix}


def _record(txn: WriteTxn, kind: KindRuntime) -> None:
    record = {"kind": kind.name, "indexes": declared(kind)}
    txn.put(keys.index_record_key(kind.key_prefix), json.dumps(record, sort_keys=True).encode())
    txn.put(keys.kind_record_key(kind.name), releases.kind_record(kind.decl, kind.release))


def _check_prefixes(txn: ReadTxn, kind: KindRuntime) -> bool:
    """Whether the kind's prefixes are recorded as declared.

    Refuses a change that would hide stored objects, and a key prefix whose
    objects another kind wrote (they would be parsed as this kind's).
    """
    owner = txn.get(keys.index_record_key(kind.key_prefix))
    previous = json.loads(owner).get("kind", kind.name) if owner is not None else kind.name
    if previous.lower() != kind.name.lower() and next(
        iter(txn.scan(keys.object_prefix(kind.key_prefix), first=1)), None
    ):
        raise RegistryError(
            f"plugin {kind.plugin!r}: kind {kind.name!r}: key prefix {kind.key_prefix!r} holds objects of kind "
            f"{previous!r}: if kind {previous!r} was renamed {kind.name!r}, keep its name (a kind's new name "
            f"goes in its aliases) so its objects stay readable; if it is another kind whose plugin is no longer "
            "installed, choose another key prefix, or reinstall that plugin"
        )
    raw = txn.get(keys.kind_record_key(kind.name))
    if raw is None:
        return False
    was: dict[str, str] = {
        name: value for name, value in json.loads(raw).items() if name in ("key_prefix", "id_prefix")
    }
    if was == _prefixes(kind):
        return True
    old_key, old_id = was["key_prefix"], was["id_prefix"]
    stored = next(iter(txn.scan(keys.object_prefix(old_key), first=1)), None)
    if stored is None:
        return False  # nothing was left behind: the new prefixes are simply recorded
    where = f"plugin {kind.plugin!r}: kind {kind.name!r}"
    if old_key != kind.key_prefix:
        raise RegistryError(
            f"{where}: its objects are stored under key prefix {old_key!r}, but it now declares "
            f"{kind.key_prefix!r}; serve it with the release that declares {old_key!r}, or move the objects "
            "(`stigmer export` with the old release, delete them, upgrade, `stigmer import`)"
        )
    raise RegistryError(
        f"{where}: its stored objects have ids '{old_id}-…', but it now declares id prefix "
        f"{kind.id_prefix!r}; ids are kept for good (references hold them), so keep id prefix {old_id!r}"
    )


def _objects(txn: ReadTxn, kind: KindRuntime) -> Iterator[Message]:
    for _, raw in txn.scan(keys.object_prefix(kind.key_prefix)):
        yield kind.parse(raw)


def _index_of(key: bytes, key_prefix: str) -> str:
    """The index name of an ``x/<key_prefix>/<index>/...`` key."""
    return key[len(b"x/" + key_prefix.encode() + b"/") :].split(b"/", 1)[0].decode()


@attrs.frozen
class Change:
    """What a startup did to one kind's indexes."""

    kind: str
    rebuilt: tuple[str, ...]
    removed: tuple[str, ...]
    objects: int


def _rebuild(txn: WriteTxn, registry: Registry, kind: KindRuntime, names: set[str], removed: set[str]) -> int:
    """Rewrite the entries of ``names`` from every stored object; drop ``removed`` indexes."""
    for name in names | removed:
        if name == REFERENCES:
            stale = list(_entries_of(txn, b"q/", kind.key_prefix))
        else:
            stale = [key for key, _ in txn.scan(keys.index_range(kind.key_prefix, name))]
        for key in stale:
            txn.delete(key)
    count = 0
    if names:
        for obj in _objects(txn, kind):
            count += 1
            for key in _rebuilt_keys(kind, obj):
                if _index_of(key, kind.key_prefix) in names:
                    txn.put(key, b"")
            if REFERENCES in names:
                for key, value in _reference_entries(txn, registry, kind, obj).items():
                    txn.put(key, value)
    _record(txn, kind)
    return count


def _reference_entries(txn: ReadTxn, registry: Registry, kind: KindRuntime, obj: Message) -> dict[bytes, bytes]:
    """The reverse-reference entries ``obj`` calls for: one per target that exists (a target
    deleted since, once its referrer finished, keeps none, by design)."""
    object_id = obj.metadata.id  # type: ignore[attr-defined]
    found: dict[bytes, bytes] = {}
    for ref in kind.references:
        target_kind = registry.kind(ref.spec.kind)
        for target in ref.field.read(obj):
            if txn.get(keys.object_key(target_kind.key_prefix, target)) is not None:
                found[keys.referrer_key(target, kind.key_prefix, object_id)] = ref.spec.field.encode()
    return found


def _rebuilt_keys(kind: KindRuntime, obj: Message) -> list[bytes]:
    """``kind.index_keys(obj)``; a plugin's ``values`` failing on a stored object stops the
    start naming the plugin, kind, index and object (its traceback is logged), and so does a
    stored value an entry cannot hold (too long for a store key, or holding NUL): LMDB refused
    it only at the commit, naming nothing, while PostgreSQL stored it."""
    try:
        return kind.index_keys(obj, checked=True)
    except InvalidArgument as refused:
        meta: Any = obj.metadata  # type: ignore[attr-defined]
        index = refused.metadata.get("index", "?")
        raise StartupError(
            f"kind {kind.name!r} (plugin {kind.plugin!r}): its index {index!r} cannot be built over the stored "
            f"{kind.label} {meta.slug!r} ({meta.id}) in org {meta.org!r}: "
            f"{refused.violations[0].description if refused.violations else refused.message}. Change that object "
            "with the plugin release that wrote it, or have the index read a shorter value; nothing was changed"
        ) from None
    except PluginFault as fault:
        cause = fault.__cause__
        said = f": {cause}" if cause is not None and str(cause) else ""
        object_id = obj.metadata.id  # type: ignore[attr-defined]
        raise StartupError(
            f"{fault.message}{said} (rebuilding its index at startup from the stored {kind.label} {object_id})"
        ) from fault


def reconcile(
    registry: Registry,
    store: Store,
    *,
    downgrade: Collection[str] = frozenset(),
    writes: bool = True,
    settles: bool = True,
) -> list[Change]:
    """Bring every kind's indexes in line with its declaration; return what changed.

    A kind with no record (a new store, or one written before records were
    kept) has every index rebuilt if it has objects, so an upgrade never
    serves an index with holes. Everything happens in one transaction; a
    start with nothing to change only reads the records.

    A kind last reconciled by a newer release of its plugin is refused
    (``KindDowngrade``, a ``StartupError``) unless ``downgrade`` names it (lower case, or ``*``):
    this start would remove that release's indexes. Otherwise this start
    records its own release, which every other daemon's writes of the kind
    then see (``Resources``). ``writes``: False for a daemon that will not
    write (read-only), which needs no release recorded. ``settles``: False for
    a command on a store daemons share, which never records its own release over
    another one's (every running daemon would refuse writes of the kind from
    then on): ``KindServedOtherwise`` when the store records another, which the
    caller may open again read-only. A store with no record (a new one) it does
    reconcile, as the first to open it.
    """
    plan: list[tuple[KindRuntime, set[str], set[str]]] = []
    otherwise: list[tuple[KindRuntime, bytes]] = []
    with store.read() as txn:
        if writes:  # one that only reads drops nothing: an older release may read a newer one's store
            _refuse_downgrades(txn, registry, downgrade)
        for kind in registry.kinds:
            want = declared(kind)
            have = recorded(txn, kind)
            raw = txn.get(keys.kind_record_key(kind.name)) if writes else None
            current = not writes or raw == _expected(kind)
            if not current and raw is not None and not settles:
                otherwise.append((kind, raw))
                continue
            if not current and raw is not None:
                _warn_another_build(kind, json.loads(raw))
            # a reader needs the indexes it declares, as it declares them; others it never reads
            fits = have == want if writes else have is not None and all(have.get(n) == v for n, v in want.items())
            if _check_prefixes(txn, kind) and fits and current:
                continue
            if have is None:
                empty = next(iter(txn.scan(keys.object_prefix(kind.key_prefix), first=1)), None) is None
                plan.append((kind, set() if empty else set(want), set()))
            else:  # stale: new or changed indexes; an unchanged record only needs its prefixes written
                stale = {name for name, version in want.items() if have.get(name) != version}
                plan.append((kind, stale, set(have) - set(want)))
    if otherwise:
        raise _served_otherwise(otherwise)
    if not plan:
        _expect_records(registry, store, writes)
        return []

    def run(txn: WriteTxn) -> list[Change]:
        _refuse_downgrades(txn, registry, downgrade)  # again: a newer release may have started since the read
        return [
            Change(
                kind.name, tuple(sorted(stale)), tuple(sorted(removed)), _rebuild(txn, registry, kind, stale, removed)
            )
            for kind, stale, removed in plan
        ]

    changes = [c for c in store.transact(run) if c.rebuilt or c.removed]
    _expect_records(registry, store, writes)
    for change in changes:
        log.warning(
            "kind %s: indexes rebuilt from %d stored objects: %s%s", change.kind, change.objects,
            ", ".join(change.rebuilt) or "none", f"; removed: {', '.join(change.removed)}" if change.removed else "",
        )  # fmt: skip
    return changes


def _served_otherwise(kinds: list[tuple[KindRuntime, bytes]]) -> KindServedOtherwise:
    """Why a command does not reconcile a shared store, naming each kind's two releases."""
    named = "; ".join(
        f"kind {kind.name!r} is served here by {releases.described(json.loads(_expected(kind)))}, by the store's "
        f"daemons by {releases.described(json.loads(raw))}"
        for kind, raw in kinds
    )
    problem = f"{named} (which last reconciled this store)"
    return KindServedOtherwise(
        f"{problem}: a command does not reconcile a store daemons share, which would have every running daemon "
        "refuse writes of the kind. Run it with the plugin release the daemons serve, or through a daemon "
        "(`--backend remote`); to move the daemons to this release, upgrade and restart them (their start "
        "reconciles the store)",
        problem,
    )


def _warn_another_build(kind: KindRuntime, theirs: dict[str, object]) -> None:
    """Tell the operator when the store was reconciled by another build of this very release:
    no order is known between the two, so this start goes on, and the other build's daemons
    refuse writes of the kind from now on."""
    ours = json.loads(_expected(kind))
    if releases.another_build(ours, theirs):
        log.warning(
            "kind %s: the store was last reconciled by another build of this release, %s; this start "
            "reconciles it to this build's, %s (on a shared store, daemons still running that build "
            "refuse writes of the kind until restarted)",
            kind.name, releases.described(theirs), releases.described(ours),
        )  # fmt: skip


def _expected(kind: KindRuntime) -> bytes:
    return releases.kind_record(kind.decl, kind.release)


def _expect_records(registry: Registry, store: Store, writes: bool) -> None:
    """From now on every write of a kind checks the store still records this daemon's release
    (a store that reads ahead fetches those records as each write begins)."""
    for kind in registry.kinds:
        kind.record = _expected(kind) if writes else b""
    if writes and isinstance(store, ReadsAhead):
        store.read_ahead([keys.kind_record_key(kind.name) for kind in registry.kinds])


def _refuse_downgrades(txn: ReadTxn, registry: Registry, allowed: Collection[str]) -> None:
    """Refuse to serve a kind with an older release than the one that reconciled the store:
    this start would remove the indexes that release added, and every write through it would
    drop the fields it added."""
    refused = []
    for kind in registry.kinds:
        raw = txn.get(keys.kind_record_key(kind.name))
        ours = kind.release
        if raw is None or ours is None or "*" in allowed or kind.name.lower() in allowed:
            continue
        theirs = releases.recorded_release(json.loads(raw))
        if theirs is not None and ours.older_than(theirs):
            refused.append((kind.name, ours, theirs))
    if refused:
        named = "; ".join(
            f"kind {name!r} is served here by {ours}, older than {theirs}" for name, ours, theirs in refused
        )
        which = ",".join(name for name, _, _ in refused)
        problem = f"{named}, which last reconciled this store"
        raise KindDowngrade(
            f"{problem}: serving it would remove the indexes and drop the fields "
            f"the newer release added. Upgrade this daemon's plugin to that release; for a deliberate downgrade, "
            f"start it with {releases.DOWNGRADE_ENV}={which} (it then reconciles the store to this release, and "
            "daemons of the newer one refuse writes of the kind until restarted)",
            problem,
        )


@attrs.frozen
class Unwritable:
    """A stored object whose index entries a write refuses as they are: an indexed value holding
    NUL (a tag stored by 0.1.0), or one longer than a key may be (stored on PostgreSQL before the
    bound). It is read, listed and deleted; its update, or its import, is refused until the
    field changes."""

    kind: str
    org: str
    slug: str
    object_id: str
    why: str


@attrs.frozen
class IndexProblem:
    """Entries of one index of one kind that disagree with the stored objects."""

    kind: str
    index: str
    missing: int
    """Entries the objects call for that are not stored."""
    stale: int
    """Stored entries no object calls for (or pointing at the wrong object)."""


def _entries_of(txn: ReadTxn, family: bytes, key_prefix: str) -> dict[bytes, bytes]:
    """``r/`` or ``q/`` entries whose object is of the kind with ``key_prefix``."""
    wanted = key_prefix.encode()
    return {key: value for key, value in txn.scan(family) if key.split(b"/")[2] == wanted}


def reference_entries(store: Store, kind: KindRuntime) -> list[tuple[bytes, bytes]]:
    """The reverse-reference entries of ``kind``'s objects (for checks and tests)."""
    with store.read() as txn:
        return sorted(_entries_of(txn, b"q/", kind.key_prefix).items())


def _families(
    txn: ReadTxn, registry: Registry, kind: KindRuntime, refused: list[Unwritable] | None = None
) -> tuple[Families, Families]:
    """Per index (slugs, labels, declared, owners, references): the entries the objects call
    for and the entries stored, each as key -> value. With ``refused``, each object whose index
    entries a write would refuse as they are is added to it."""
    expected: Families = {SLUG_INDEX: {}, OWNERS: {}, REFERENCES: {}}
    for obj in _objects(txn, kind):
        meta = obj.metadata  # type: ignore[attr-defined]
        expected[SLUG_INDEX][keys.slug_key(kind.key_prefix, meta.org, meta.slug)] = meta.id.encode()
        if refused is not None:
            try:
                kind.index_keys(obj, checked=True)
            except InvalidArgument as exc:
                why = exc.violations[0].description if exc.violations else exc.message
                refused.append(Unwritable(kind.name, meta.org, meta.slug, meta.id, why))
        for key in kind.index_keys(obj):
            expected.setdefault(_index_of(key, kind.key_prefix), {})[key] = b""
        expected[OWNERS].update(dict.fromkeys(kind.owner_keys(obj), b""))
        expected[REFERENCES].update(_reference_entries(txn, registry, kind, obj))
    stored: Families = {
        SLUG_INDEX: dict(txn.scan(keys.slug_range(kind.key_prefix))),
        OWNERS: _entries_of(txn, b"r/", kind.key_prefix),
        REFERENCES: _entries_of(txn, b"q/", kind.key_prefix),
    }
    for key, value in txn.scan(keys.indexes_range(kind.key_prefix)):
        stored.setdefault(_index_of(key, kind.key_prefix), {})[key] = value
    return expected, stored


def _problems(
    txn: ReadTxn, registry: Registry, kind: KindRuntime, refused: list[Unwritable] | None = None
) -> list[IndexProblem]:
    expected, stored = _families(txn, registry, kind, refused)
    problems = []
    for name in sorted(expected.keys() | stored.keys()):
        want, have = expected.get(name, {}), stored.get(name, {})
        missing = sum(1 for k, v in want.items() if have.get(k) != v)
        stale = sum(1 for k, v in have.items() if want.get(k) != v)
        if missing or stale:
            problems.append(IndexProblem(kind.name, name, missing, stale))
    return problems


def _repair(txn: WriteTxn, registry: Registry, kind: KindRuntime) -> None:
    expected, stored = _families(txn, registry, kind)
    for name in expected.keys() | stored.keys():
        want, have = expected.get(name, {}), stored.get(name, {})
        for key, value in have.items():
            if want.get(key) != value:
                txn.delete(key)
        for key, value in want.items():
            if have.get(key) != value:
                txn.put(key, value)
    _record(txn, kind)


def check(
    registry: Registry, store: Store, *, repair: bool = False, refused: list[Unwritable] | None = None
) -> list[IndexProblem]:
    """Compare every index of every kind with its stored objects; with ``repair``, fix them.

    The indexes are the slug index, the label index, each declared index,
    and the ownership and reverse-reference entries. Reads every object: a
    maintenance command, never a request path. With ``refused``, the objects whose index
    entries a write now refuses as they are (stored by a release that took them) are added
    to it: no repair can fix those, only a write changing the field.
    """
    found: list[IndexProblem] = []
    for kind in registry.kinds:
        with store.read() as txn:
            problems = _problems(txn, registry, kind, refused)
            current = recorded(txn, kind) == declared(kind)
        found += problems
        if repair and (problems or not current):
            store.transact(lambda txn, kind=kind: _repair(txn, registry, kind))  # type: ignore[misc]
    return found
