"""What each org's objects take in the store, counted as they are written, and its quota.

On a team server every org writes to one store, so one org could otherwise
fill the disk and leave every org's writes refused. Each org's usage
(objects held; bytes of their serialized values, with a versioned kind's
``ver/`` values) is one key, ``m/org-usage/<org>``, that ``Resources``
changes in the transaction of every write it makes: checking a write
against ``Limits.max_org_objects`` and ``Limits.max_org_bytes`` is one key
read, never a scan, and a write rolled back takes its change with it.

The quota binds callers with API tokens. The local administrator (the
in-process caller, the local daemon's owner) owns the machine and its disk,
as it has no share of the stream limits either: its writes are counted,
never refused. A write that does not grow an org (a delete, an update to a
smaller object) is never refused, whatever the org holds.

A store written before the counters existed has them computed once when it
is opened (``reconcile``, a scan of every object, remembered by the marker
``m/org-usage-counted``); ``check`` compares them with the objects and
repairs them on request (``stigmer doctor``). Objects of a kind no
installed plugin serves were counted when they were written and still take
their room, so they are counted too: their org is read from their slug index
keys (``s/<key_prefix>/<org>/<slug>`` -> id), since their values cannot be parsed.
"""

from __future__ import annotations

import logging

import attrs

from stigmer_core import errors
from stigmer_core.kinds.runtime import Registry
from stigmer_core.limits import ENV, Limits
from stigmer_core.store import keys
from stigmer_core.store.protocol import ReadTxn, Store, WriteTxn

log = logging.getLogger(__name__)


def encode(objects: int, size: int) -> bytes:
    return objects.to_bytes(8, "big") + size.to_bytes(8, "big")


def decode(raw: bytes | None) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:16], "big")


class Tally:
    """One org's usage as a transaction has changed it so far (mutable: one per org per transaction)."""

    __slots__ = ("changed", "objects", "org", "size", "stored")

    def __init__(self, org: str, raw: bytes | None) -> None:
        self.org = org
        self.objects, self.size = decode(raw)
        self.stored = (self.objects, self.size)
        """What the org held before this transaction: a refusal says it and what the whole write adds."""
        self.changed = False

    def add(self, objects: int, size: int) -> None:
        """Count one object's write. The quota is checked once the whole write is counted
        (``check``): checked here, an agent refused before its default instance was counted
        was said to add one object, and bytes the agent's alone."""
        self.objects += objects
        self.size += size
        self.changed = True

    def check(self, limits: Limits) -> None:
        """Refuse the write if it grows the org past ``limits`` (a bound caller's): runs when the
        write publishes, before the transaction commits, so nothing of a refused write is stored.

        A write that adds no object (an update, a status report, a revocation, a cancel) may
        take the org's bytes a sixteenth past the limit: an org whose creates are refused must
        still be able to finish and cancel its runs and revoke a leaked token, and the
        headroom still bounds what it holds.
        """
        (held_objects, held_size), (objects, size) = self.stored, (self.objects, self.size)
        if objects > held_objects and limits.max_org_objects and objects > limits.max_org_objects:
            raise _refusal(
                f"org '{self.org}' holds {_objects(held_objects)} and this write adds {objects - held_objects:,}, "
                f"past its limit of {limits.max_org_objects:,} (max_org_objects, {ENV['max_org_objects']}); "
                "delete some first",
                self.org, "max_org_objects", limits.max_org_objects, held_objects, objects - held_objects,
            )  # fmt: skip
        limit = limits.max_org_bytes
        if objects <= held_objects:
            limit += limit // 16
        if size > held_size and limits.max_org_bytes and size > limit:
            raise _refusal(
                f"org '{self.org}' holds {_size(held_size)} of objects and this write adds {_size(size - held_size)}, "
                f"past its limit of {_size(limits.max_org_bytes)} (max_org_bytes, {ENV['max_org_bytes']}"
                f"{'' if objects > held_objects else ', and a sixteenth more for writes that add no object'}); "
                "delete some first",
                self.org, "max_org_bytes", limits.max_org_bytes, held_size, size - held_size,
            )  # fmt: skip

    def write(self, txn: WriteTxn) -> None:
        if not self.changed:
            return
        key = keys.org_usage_key(self.org)
        if self.objects <= 0 and self.size <= 0:
            txn.delete(key)  # an org that holds nothing leaves no key behind
        else:
            txn.put(key, encode(max(self.objects, 0), max(self.size, 0)))
        self.changed = False


def _refusal(message: str, org: str, limit_name: str, limit: int, held: int, adds: int) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        message,
        reason="ORG_QUOTA",
        metadata={"org": org, "limit": limit, "setting": ENV[limit_name], "held": held, "adds": adds},
    )


def _size(size: int) -> str:
    """Bytes exactly (two sizes a byte apart must not read the same), with a rounded unit."""
    exact = f"{size:,} byte{'' if size == 1 else 's'}"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{exact} ({size / (1 << shift):.1f} {unit})"
    return exact


def _objects(count: int) -> str:
    return f"{count:,} object{'' if count == 1 else 's'}"


# -- counting from the objects -------------------------------------------------------------
Usage = dict[str, tuple[int, int]]
"""org -> (objects, bytes)."""


def recount(txn: ReadTxn, registry: Registry) -> Usage:
    """Every org's usage from the stored objects of every kind the store holds: reads them all.

    A kind whose plugin is not installed is found by its index record (``m/indexes/<key_prefix>``,
    one key per kind ever served) and its objects' orgs by its slug index, so uninstalling a
    plugin does not make its objects' room look like a counter gone wrong.
    """
    counted: dict[str, list[int]] = {}
    served = {kind.key_prefix for kind in registry.kinds}
    for kind in registry.kinds:
        orgs: dict[bytes, str] = {}
        for _, raw in txn.scan(kind.object_range):
            meta = kind.parse(raw).metadata  # type: ignore[attr-defined]
            orgs[meta.id.encode()] = meta.org
            _add(counted, meta.org, 1, len(raw))
        _add_versions(txn, kind.key_prefix, orgs, counted)
    records = keys.index_record_key("")
    for key, _ in list(txn.scan(records)):
        key_prefix = key[len(records) :].decode()
        if key_prefix not in served:
            _recount_absent(txn, key_prefix, counted)
    return {org: (found[0], found[1]) for org, found in counted.items()}


def _add(counted: dict[str, list[int]], org: str, objects: int, size: int) -> None:
    found = counted.setdefault(org, [0, 0])
    found[0] += objects
    found[1] += size


def _add_versions(txn: ReadTxn, key_prefix: str, orgs: dict[bytes, str], counted: dict[str, list[int]]) -> None:
    # the kind's versions in one range, not a lookup per object: most kinds keep none
    versions = keys.version_prefix(key_prefix, "")[:-1]
    for key, value in txn.scan(versions):
        org = orgs.get(key[len(versions) :].split(b"/", 1)[0])
        if org is not None:  # values of an object that is gone are not the org's
            _add(counted, org, 0, len(value))


def _recount_absent(txn: ReadTxn, key_prefix: str, counted: dict[str, list[int]]) -> None:
    """The objects under a key prefix no installed kind declares, their orgs from the slug keys."""
    slugs = keys.slug_range(key_prefix)
    orgs = {object_id: key[len(slugs) :].split(b"/", 1)[0].decode() for key, object_id in txn.scan(slugs)}
    objects = keys.object_prefix(key_prefix)
    for key, raw in txn.scan(objects):
        org = orgs.get(key[len(objects) :])
        if org is not None:
            _add(counted, org, 1, len(raw))
    _add_versions(txn, key_prefix, orgs, counted)


def stored(txn: ReadTxn) -> Usage:
    """The counters as the store holds them."""
    return {key[len(keys.ORG_USAGE) :].decode(): decode(raw) for key, raw in txn.scan(keys.ORG_USAGE)}


def _rewrite(txn: WriteTxn, registry: Registry) -> Usage:
    counted = recount(txn, registry)
    for key, _ in list(txn.scan(keys.ORG_USAGE)):
        if key[len(keys.ORG_USAGE) :].decode() not in counted:
            txn.delete(key)
    for org, (objects, size) in counted.items():
        txn.put(keys.org_usage_key(org), encode(objects, size))
    txn.put(keys.ORG_USAGE_COUNTED, b"1")
    return counted


def reconcile(registry: Registry, store: Store) -> bool:
    """Count every org's usage once, for a store written before the counters were kept.

    A start that finds the marker only reads it. The marker is looked at
    again inside the writing transaction, so daemons starting together on
    one database count once. Returns whether this start counted.
    """
    with store.read() as txn:
        if txn.get(keys.ORG_USAGE_COUNTED) is not None:
            return False

    def run(txn: WriteTxn) -> Usage | None:
        if txn.get(keys.ORG_USAGE_COUNTED) is not None:
            return None
        return _rewrite(txn, registry)

    counted = store.transact(run)
    if counted is None:
        return False
    if counted:
        log.warning("org usage counted from the stored objects of %d orgs", len(counted))
    return True


@attrs.frozen
class UsageProblem:
    """One org whose counter disagrees with its objects."""

    org: str
    stored: tuple[int, int]
    """(objects, bytes) the counter says."""
    counted: tuple[int, int]
    """(objects, bytes) the objects say."""


def check(registry: Registry, store: Store, *, repair: bool = False) -> list[UsageProblem]:
    """Compare every org's counter with its objects; with ``repair``, rewrite them from the objects.

    Reads every object: a maintenance command, never a request path.
    """
    with store.read() as txn:
        counted, have = recount(txn, registry), stored(txn)
    problems = [
        UsageProblem(org, have.get(org, (0, 0)), counted.get(org, (0, 0)))
        for org in sorted(counted.keys() | have.keys())
        if have.get(org, (0, 0)) != counted.get(org, (0, 0))
    ]
    if repair and problems:
        store.transact(lambda txn: _rewrite(txn, registry))
    return problems
