"""Kind objects on top of a raw transaction: objects, indexes, owners, events, org usage.

Every write of a kind object goes through here, whether a standard step or
a kind's own step (say, creating a default instance) asks for it, so the
slug index, the declared indexes, the ownership entries, the event log and
the org's usage counter (and so its quota: kinds/usage.py) always change
together with the object, in the caller's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar, cast

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from stigmer_core import errors
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.auth.access import Access, Caller
from stigmer_core.headers import CREATED_MARK
from stigmer_core.ids import is_valid_id, new_id, slugify, unlike_id
from stigmer_core.kinds.depth_probe import DEPTH
from stigmer_core.kinds.nesting import NESTING
from stigmer_core.kinds.releases import moved_on
from stigmer_core.kinds.runtime import KindRuntime, Registry
from stigmer_core.kinds.usage import Tally
from stigmer_core.limits import ENV, Limits
from stigmer_core.pipeline.step import plugin_fault
from stigmer_core.store import keys
from stigmer_core.store.protocol import ReadTxn, WriteTxn

T = TypeVar("T")

CREATED = event_pb2.RESOURCE_EVENT_TYPE_CREATED
UPDATED = event_pb2.RESOURCE_EVENT_TYPE_UPDATED
DELETED = event_pb2.RESOURCE_EVENT_TYPE_DELETED

_READ_TOGETHER = 256
"""Objects whose entries a delete reads in one statement: a level of its tree in a few round trips,
each bounded (with the room the limit leaves, what one statement may read before a refusal)."""


def _by_prefix(prefixes: list[bytes], read: Iterable[tuple[bytes, T]]) -> dict[bytes, list[tuple[bytes, T]]]:
    """What ``ReadTxn.scan_many`` or ``sizes_under`` read, by prefix: each prefix's entries, in
    order, and none for a prefix that has none."""
    grouped: dict[bytes, list[tuple[bytes, T]]] = {prefix: [] for prefix in prefixes}
    at = 0
    for key, value in read:  # in the prefixes' order
        while not key.startswith(prefixes[at]):
            at += 1
        grouped[prefixes[at]].append((key, value))
    return grouped


_Event = tuple[int, str, str, str, bytes, "list[bytes] | None"]
"""type, kind, id, org, the object as stored, the index keys it had before (a filtered watch needs them)."""
"""A queued event: type, kind name, object id, stored (redacted) bytes, index keys it left when they moved."""


def _now() -> Timestamp:
    # GetCurrentTime() goes through datetime; FromNanoseconds is Python code of protobuf's, with a check
    # of the range (a clock's now is within it) and two field writes
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def taken_elsewhere(kind: KindRuntime, object_id: str, org: str) -> errors.NotFound:
    """The refusal of an id another org's object holds (ids are unique across orgs): whose it
    is, or what it is, is not told; only that it cannot be used here."""
    return errors.NotFound(
        f"{kind.label} '{object_id}' not found in org '{org}', and that id cannot be used there: "
        "leave metadata.id out to create it under a new one",
        reason=ID_TAKEN,
        metadata={"kind": kind.name, "id": object_id, "org": org},
    )


def id_shaped_slug(slug: str, field: str = "metadata.slug", *, derived: bool = False) -> errors.InvalidArgument:
    """The refusal of a slug shaped like an id (``<prefix>-<ULID>``): a name or reference
    written that way is looked up as an id (``ids.looks_like_id``: the CLI's NAME|ID, a
    request's id field given a slug), so the object would be listed under a name that finds
    another object, or none. ``derived``: the slug was made from ``field`` (a name)."""
    said = f"derives the slug '{slug}', which" if derived else f"'{slug}'"
    return errors.InvalidArgument.field(
        field,
        f"{said} has the shape of an id (<prefix>-<26-character ULID>); a name written that way is looked "
        "up as an id, so nothing could find this object by it: choose another slug",
        reason=SLUG_LOOKS_LIKE_ID,
        metadata={"slug": slug},
    )


SLUG_LOOKS_LIKE_ID = "SLUG_LOOKS_LIKE_ID"


ID_TAKEN = "ID_TAKEN"
"""The reason of ``taken_elsewhere``: told apart from a NOT_FOUND of the id itself (an update of an
object deleted since), which its words alone told a client."""


def _declared(kind: KindRuntime, where: str, fn: Callable[..., T], *args: Any) -> T:
    """Call a function ``kind``'s declaration gave (a delete guard, a reference's ``live``):
    what it raises besides a refusal is ``kind``'s plugin's fault, told as such, not the fault of
    whichever kind's rpc was running (a cascade's, or a referenced object's delete)."""
    try:
        return fn(*args)
    except BaseException as exc:
        fault = plugin_fault(exc, where, kind.plugin)
        if fault is exc:
            raise
        raise fault from (exc if isinstance(exc, Exception) else None)


class Resources:
    """Kind-aware view of one store transaction, as one caller sees it.

    Org isolation lives here because every read and write of a kind object,
    a kind's own steps included, goes through this class: for a restricted
    ``caller`` an object of an org it does not belong to does not exist
    (NOT_FOUND wherever it is looked up, by id, slug, reference or owner),
    and every write needs ``access`` in the written object's org.
    """

    __slots__ = (
        "_access", "_caller", "_current", "_events", "_now", "_owned_by", "_quota", "_read_only", "_sizes", "_usage",
        "_written", "principal", "published", "registry", "removed", "txn",
    )  # fmt: skip

    def __init__(
        self,
        txn: ReadTxn,
        registry: Registry,
        *,
        caller: Caller | None = None,
        access: Access = Access.WRITE,
        read_only: str = "",
    ) -> None:
        """``read_only``: the operation, when it is bound as a read (its writes are a plugin's fault)."""
        self.txn = txn
        self._read_only = read_only
        self.registry = registry
        self._events: list[_Event] = []
        self.published: list[_Event] | None = None
        """The events ``publish`` appended, kept when a list is set here (a dry run, to name what it made)."""
        self._caller = None if caller is None or caller.unrestricted else caller
        self._access = access
        self.principal = caller.principal if caller is not None else "local"
        self._owned_by: list[tuple[KindRuntime, Message, frozenset[str]]] = []
        self.removed: list[tuple[KindRuntime, Message]] = []
        """What deletes of this transaction removed, owners before what they owned (what a
        delete reports to its caller: the cascade, not only the object named)."""
        self._written: dict[bytes, str] = {}
        """Object key -> org of what this transaction has stored, for the owner check at publish."""
        self._now: Timestamp | None = None
        self._usage: dict[str, Tally] = {}
        """Org -> its usage as this transaction changed it, written when it publishes (kinds/usage.py)."""
        self._sizes: dict[bytes, int] = {}
        """Object key -> stored size of what this transaction read or wrote: what a replace or a
        delete gives back to its org's usage, without reading the object again."""
        self._current: set[str] = set()
        """Kinds whose release record this transaction found as this daemon reconciled it."""
        self._quota: Limits | None = None if self._caller is None else registry.limits
        """The limits a write is held to: none for the local administrator, who owns the machine."""

    def now(self) -> Timestamp:
        """The time this transaction stamps on what it writes: one instant for all of it
        (an agent and its default instance, their events), read from the clock once."""
        found = self._now
        if found is None:
            found = self._now = _now()
        return found

    # -- isolation -----------------------------------------------------------
    def visible(self, org: str) -> bool:
        """Whether this view's caller may see objects of ``org``."""
        return self._caller is None or self._caller.member_of(org)

    def may_read(self, kind: KindRuntime, org: str) -> bool:
        """Whether this view's caller may read ``kind``'s objects of ``org``: what naming one
        of them, in a refusal or as an owner, needs."""
        return self._caller is None or self._caller.can(kind.read_access, org)

    def _check_write(self, kind: KindRuntime, org: str) -> None:
        caller = self._caller
        if caller is None or caller.can(self._access, org):
            return
        if not caller.member_of(org):
            raise errors.OrgNotVisible(f"org '{org}' not found", metadata={"org": org})
        raise errors.PermissionDenied(
            f"{caller.principal} is {caller.roles[org]} in org '{org}', which does not allow "
            f"{self._access.value} access to {kind.label} objects",
            metadata={"kind": kind.name, "org": org, "role": caller.roles[org], "access": self._access.value},
        )

    # -- reads -------------------------------------------------------------
    def get(self, kind: KindRuntime, object_id: str) -> Message | None:
        key = kind.object_key(object_id)
        raw = self.txn.get(key)
        if raw is None:
            return None
        self._sizes[key] = len(raw)
        found = _parse(kind, object_id, raw)
        if self._caller is not None and not self._caller.member_of(found.metadata.org):  # type: ignore[attr-defined]
            return None
        return found

    def hidden(self, kind: KindRuntime, object_id: str) -> bool:
        """Whether ``object_id`` names an object this caller may not see (it is answered as not found)."""
        return (
            self._caller is not None
            and self.get(kind, object_id) is None
            and self._get_any(kind, object_id) is not None
        )

    def _get_any(self, kind: KindRuntime, object_id: str) -> Message | None:
        """Whatever org the object is in: for checks that must not miss one (referrers)."""
        raw = self.txn.get(kind.object_key(object_id))
        return None if raw is None else _parse(kind, object_id, raw)

    def require(self, kind: KindRuntime, object_id: str) -> Message:
        found = self.get(kind, object_id)
        if found is None:
            raise errors.NotFound(
                f"{kind.label} '{object_id}' not found", metadata={"kind": kind.name, "id": object_id}
            )
        return found

    def check_id(self, kind: KindRuntime, object_id: str, field: str) -> None:
        """Refuse a request's id ``field`` holding what is no id of ``kind`` (a slug, most likely):
        INVALID_ARGUMENT naming the field and what it takes, where a lookup answered NOT_FOUND
        of an object that exists under that slug."""
        if not object_id:
            raise errors.InvalidArgument.field(field, "is required")
        if not is_valid_id(object_id, kind.id_prefix):
            raise errors.InvalidArgument.field(
                field,
                f"'{object_id}' is not {kind.a_label} id like '{kind.id_prefix}-<ulid>': this field takes "
                "the id, not a slug; getByReference finds the id of a slug",
            )

    def require_id(self, kind: KindRuntime, object_id: str, field: str) -> Message:
        """``require`` of the object a request's id ``field`` names, checked by ``check_id`` first."""
        self.check_id(kind, object_id, field)
        return self.require(kind, object_id)

    def id_for_slug(self, kind: KindRuntime, org: str, slug: str) -> str | None:
        if not self.visible(org):
            return None
        raw = self.txn.get(kind.slug_key(org, slug))
        return None if raw is None else raw.decode()

    def require_slug(self, kind: KindRuntime, org: str, slug: str) -> Message:
        object_id = self.id_for_slug(kind, org, slug)
        found = None if object_id is None else self.get(kind, object_id)
        if found is None:
            raise errors.NotFound(
                f"{kind.label} '{slug}' not found in org '{org}'",
                metadata={"kind": kind.name, "slug": slug, "org": org},
            )
        return found

    def scan_index(self, kind: KindRuntime, index: str, value: tuple[str, ...], *, after: str = "") -> Iterator[str]:
        """Ids under one index value, in id (creation) order."""
        prefix = keys.index_prefix(kind.key_prefix, index, value)
        start = prefix + after.encode() if after else b""
        for key, _ in self.txn.scan(prefix, after=start):
            yield key[len(prefix) :].decode()

    def owned(self, owner_id: str) -> list[tuple[KindRuntime, str]]:
        """What ``owner_id`` owns: (kind, id) pairs, of the kinds this server serves."""
        prefix = keys.owned_prefix(owner_id)
        found = []
        for key, _ in self.txn.scan(prefix):
            key_prefix, _, object_id = key[len(prefix) :].decode().rpartition("/")
            kind = self.registry.find_key_prefix(key_prefix)
            if kind is not None:
                found.append((kind, object_id))
        return found

    # -- writes --------------------------------------------------------------
    @property
    def _writer(self) -> WriteTxn:
        if self._read_only:
            raise errors.PluginFault(
                f"internal error: operation '{self._read_only}' wrote to the store, but it is bound as a read, "
                "answered from a snapshot: bind it with CustomOperation(..., writes=True); nothing was written"
            )
        return self.txn  # type: ignore[return-value]  # a write's view holds a WriteTxn; cast() would be a call per write

    def stamp_new(self, kind: KindRuntime, obj: Message, *, org: str, principal: str) -> None:
        """Give a new object its server-owned fields: id, kind, org, times, status."""
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.id:
            if not is_valid_id(meta.id, kind.id_prefix):
                raise errors.InvalidArgument.field(
                    "metadata.id", f"must be empty or {kind.a_label} id like '{kind.id_prefix}-<ulid>'"
                )
        else:
            meta.id = new_id(kind.id_prefix)
        obj.kind = kind.name  # type: ignore[attr-defined]
        obj.api_version = kind.api_version  # type: ignore[attr-defined]  # the kind's, as ``kind`` is, whatever was sent
        meta.org = org
        shape = kind.shape
        if shape.has_status:
            obj.ClearField("status")
        if shape.has_version:  # a versioned kind's steps stamp it; a client's claim is never kept
            meta.ClearField("version")
        now = self.now()
        if shape.has_timestamps:
            meta.created_at.CopyFrom(now)
            meta.updated_at.CopyFrom(now)
        if shape.has_audit:
            audit = obj.status.audit.spec_audit  # type: ignore[attr-defined]
            audit.created_at.CopyFrom(now)
            audit.updated_at.CopyFrom(now)
            audit.created_by.id = principal
            audit.updated_by.id = principal

    def stamp_update(self, kind: KindRuntime, obj: Message, *, principal: str, part: str = "spec") -> None:
        """``part``: what the write changed, ``spec`` or ``status`` (a runner's report): only that
        part's audit names the writer, so a report never passes for an edit of the spec."""
        now = self.now()
        if kind.shape.has_timestamps:
            obj.metadata.updated_at.CopyFrom(now)  # type: ignore[attr-defined]
        if kind.shape.has_audit:
            audit = getattr(obj.status.audit, f"{part}_audit")  # type: ignore[attr-defined]
            audit.updated_at.CopyFrom(now)
            audit.updated_by.id = principal

    def check_slug_free(self, kind: KindRuntime, obj: Message, fallback_slug: str = "") -> None:
        """Refuse a new object whose slug (or id, when it has one) is taken; with
        ``fallback_slug``, take that slug instead when the object's is taken (then refuse if
        that one is too). What is read goes in one ``get_many``, the org's usage (which the
        insert counts) included: one round trip on a database server, where each get with the
        write lock held is one."""
        meta = obj.metadata  # type: ignore[attr-defined]
        org = meta.org
        if not self.visible(org):  # a kind's step chose the org: what is in it is not told
            raise errors.OrgNotVisible(f"org '{org}' not found", metadata={"org": org})
        wanted = [kind.slug_key(org, meta.slug)]
        if fallback_slug:
            wanted.append(kind.slug_key(org, fallback_slug))
        id_at = len(wanted)  # where the object key's answer is, when it has an id
        if meta.id:
            wanted.append(kind.object_key(meta.id))
        counted = org in self._usage
        if not counted:
            wanted.append(keys.org_usage_key(org))
        found = self.txn.get_many(wanted)
        if not counted:
            self._usage[org] = Tally(org, found[-1])
        taken = found[0] is not None
        if taken and fallback_slug:
            meta.slug = fallback_slug
            taken = found[1] is not None
        if taken:
            raise errors.AlreadyExists(
                f"{kind.label} '{meta.slug}' already exists in org '{meta.org}'",
                metadata={"kind": kind.name, "slug": meta.slug, "org": meta.org},
            )
        if meta.id and found[id_at] is not None:
            if self.hidden(kind, meta.id):
                raise taken_elsewhere(kind, meta.id, meta.org)
            raise errors.AlreadyExists(
                f"{kind.label} id '{meta.id}' already exists", metadata={"kind": kind.name, "id": meta.id}
            )

    def check_references(self, kind: KindRuntime, obj: Message, previous: Message | None = None) -> None:
        """Every id a declared reference field holds names an existing object (same org if required).

        With ``previous`` (an update), only ids the write adds are checked: a
        finished execution whose workflow was deleted, by design, can still
        have its labels edited.
        """
        org = obj.metadata.org  # type: ignore[attr-defined]
        for ref in kind.references:
            target_kind = self.registry.kind(ref.spec.kind)
            kept = set(ref.field.read(previous)) if previous is not None else set()
            for target_id in ref.field.read(obj):
                if target_id in kept:
                    continue
                if not is_valid_id(target_id, target_kind.id_prefix):  # a slug, most likely: say what is wanted
                    raise errors.InvalidArgument.field(
                        ref.field.path,
                        f"'{target_id}' is not {target_kind.a_label} id like '{target_kind.id_prefix}-<ulid>': "
                        "references hold ids (stigmer apply turns a slug into its id where this kind's plugin is "
                        "installed beside the CLI; otherwise, and over the API, get the id first)",
                    )
                target_org = self._org_of(target_kind, target_id)
                if target_org is None or (ref.spec.same_org and target_org != org):
                    where = f" in org '{org}'" if ref.spec.same_org else ""
                    raise errors.NotFound(
                        f"{target_kind.label} '{target_id}' not found{where} ({ref.field.path})",
                        metadata={"kind": target_kind.name, "id": target_id, "field": ref.field.path},
                    )

    def _org_of(self, kind: KindRuntime, object_id: str) -> str | None:
        """The org of an object this caller can see; None when there is none. An object this
        transaction wrote is known without reading it back (an agent's default instance
        names the agent written just before it)."""
        org = self._written.get(kind.object_key(object_id))
        if org is not None:
            return org if self.visible(org) else None
        found = self.get(kind, object_id)
        return None if found is None else found.metadata.org  # type: ignore[attr-defined]

    def check_referrers(
        self,
        kind: KindRuntime,
        obj: Message,
        inside: frozenset[str] = frozenset(),
        scanned: dict[bytes, list[bytes]] | None = None,
        entries: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Refuse to delete what is still referenced.

        A referrer whose reference declares ``live`` blocks while it is live,
        even when the same cascade would delete it (a running execution must
        not vanish with its session); one without blocks unless it is itself
        among the objects being deleted (``inside``). ``scanned`` keeps the entries' keys by prefix, for
        the delete to remove without reading them again;
        ``entries``: the object's referrer entries, read already (``remove`` reads a tree's together).
        """
        meta = obj.metadata  # type: ignore[attr-defined]
        prefix = keys.referrer_prefix(meta.id)
        if entries is None:
            entries = list(self.txn.scan(prefix))
        if scanned is not None:
            scanned[prefix] = [key for key, _ in entries]
        for key, field in entries:
            key_prefix, _, referrer_id = key[len(prefix) :].decode().rpartition("/")
            referrer_kind = self.registry.find_key_prefix(key_prefix)
            if referrer_kind is None:  # its plugin is gone: whether it is live cannot be known, so it blocks
                raise errors.FailedPrecondition(
                    f"{kind.label} '{meta.slug}' is still referenced by '{referrer_id}' ({field.decode()}), "
                    f"an object stored under '{key_prefix}', a kind no installed plugin serves; "
                    "reinstall that kind's plugin to delete or finish it first",
                    reason="REFERENCED",
                    metadata={"kind": kind.name, "id": meta.id, "field": field.decode()},
                )
            referrer = self._get_any(referrer_kind, referrer_id)
            if referrer is None:  # pragma: no cover - reference entries go with their object
                continue
            ref = next((r for r in referrer_kind.references if r.spec.field == field.decode()), None)
            if ref is not None and ref.spec.live is not None:
                live = ref.spec.live
                where = f"Reference.live of {referrer_kind.name}.{ref.spec.field}"
                blocks = _declared(referrer_kind, where, live, referrer)
            else:
                blocks = referrer_id not in inside
            if blocks:
                referrer_org = referrer.metadata.org  # type: ignore[attr-defined]
                if self.may_read(referrer_kind, referrer_org):
                    named = referrer.metadata.slug  # type: ignore[attr-defined]
                elif self.visible(referrer_org):
                    named = "(one this caller may not read)"
                else:
                    named = "(in another org)"
                raise errors.FailedPrecondition(
                    f"{kind.label} '{meta.slug}' is still referenced by {referrer_kind.label} "
                    f"'{named}' ({field.decode()}); delete or finish that first",
                    reason="REFERENCED",
                    metadata={
                        "kind": kind.name,
                        "id": meta.id,
                        "referrerKind": referrer_kind.name,
                        "field": field.decode(),
                    },
                )

    def owned_tree(
        self, kind: KindRuntime, obj: Message, scanned: dict[bytes, list[bytes]] | None = None
    ) -> list[tuple[KindRuntime, Message]]:
        """The object and everything it owns, recursively, owners before what they own.

        Only objects of the root's org are part of it: ownership never
        reaches into another org, whatever an owner reference says. A tree
        larger than one write may delete (``Limits.max_objects_per_write``)
        is refused before anything is deleted; so is one holding objects of
        a kind no installed plugin serves, whose indexes could not be
        removed with them.

        The tree's size is known from its owned entries alone, read a level
        at a time (``ReadTxn.scan_many``) with no owner's read past the room
        the limit leaves, before any object is read: a refused delete was
        free to repeat, and read every object up to the limit first, a few
        thousand on a database with every other writer waiting. Then the
        objects are read a level at a time (``get_many``): a few round trips
        a level, where it took two an object.
        """
        limit = self.registry.limits.max_objects_per_write
        org = obj.metadata.org  # type: ignore[attr-defined]
        root = f"{kind.label} '{obj.metadata.slug}'"  # type: ignore[attr-defined]
        entries: dict[bytes, list[bytes]] = {} if scanned is None else scanned
        found = {obj.metadata.id}  # type: ignore[attr-defined]  # every id named so far, read or not
        ids = list(found)
        while ids:  # the size, from the entries alone
            below: list[str] = []
            for start in range(0, len(ids), _READ_TOGETHER):
                below += self._owned_within(ids[start : start + _READ_TOGETHER], found, limit, root, entries)
            ids = below
        tree: list[tuple[KindRuntime, Message]] = []
        seen = {obj.metadata.id}  # type: ignore[attr-defined]
        level: list[tuple[KindRuntime, Message]] = [(kind, obj)]
        while level:  # the objects, owners first, in the root's org
            tree.extend(level)
            owned: list[tuple[str, KindRuntime | None, str]] = []
            for _, node in level:
                prefix = keys.owned_prefix(node.metadata.id)  # type: ignore[attr-defined]
                for key in entries[prefix]:
                    key_prefix, _, child_id = key[len(prefix) :].decode().rpartition("/")
                    if child_id not in seen:
                        seen.add(child_id)
                        owned.append((key_prefix, self.registry.find_key_prefix(key_prefix), child_id))
            level = []
            for start in range(0, len(owned), _READ_TOGETHER):
                chunk = owned[start : start + _READ_TOGETHER]
                if len(chunk) > 1:  # read together: on a database, one round trip for the lot, not one each
                    self.txn.get_many([child.object_key(child_id) for _, child, child_id in chunk if child is not None])
                for key_prefix, child_kind, child_id in chunk:
                    if child_kind is None:
                        raise errors.FailedPrecondition(
                            f"{root} owns '{child_id}', an object stored under '{key_prefix}', a kind no "
                            "installed plugin serves; reinstall that kind's plugin to delete it with its owner"
                        )
                    child = self.get(child_kind, child_id)
                    if child is not None and child.metadata.org == org:  # type: ignore[attr-defined]
                        level.append((child_kind, child))
        return tree

    def _owned_within(
        self, owners: list[str], found: set[str], limit: int, root: str, entries: dict[bytes, list[bytes]]
    ) -> list[str]:
        """The ids ``owners`` own that are not ``found`` yet (added to it), refused past ``limit`` in
        all; each owner's entry keys go in ``entries``. Each owner's entries are read up to the room
        left and one more; an owner cut short whose entries named objects found already (owned
        twice) is read whole again."""
        room = limit - len(found)
        prefixes = [keys.owned_prefix(owner) for owner in owners]
        read = self.txn.scan_many(prefixes, first=room + 1)
        by_prefix = {prefix: [key for key, _ in held] for prefix, held in _by_prefix(prefixes, read).items()}
        cut = [prefix for prefix, held in by_prefix.items() if len(held) > room]
        named = {key.rpartition(b"/")[2].decode() for key, _ in read} - found
        if len(named) <= room and cut:  # some named twice: read those owners whole, to know
            for prefix in cut:
                by_prefix[prefix] = [key for key, _ in self.txn.scan(prefix)]
            named = {key.rpartition(b"/")[2].decode() for held in by_prefix.values() for key in held} - found
        if len(named) > room:
            raise errors.FailedPrecondition(
                f"deleting {root} would delete more than {limit} objects, itself and what it owns, more "
                "than one write may change (max_objects_per_write); delete some of what it owns first",
                reason="WRITE_TOO_LARGE",
                metadata={"limit": limit, "setting": ENV["max_objects_per_write"]},
            )
        entries.update(by_prefix)
        new = [key.rpartition(b"/")[2].decode() for held in by_prefix.values() for key in held]
        fresh = list(dict.fromkeys(child for child in new if child not in found))
        found.update(fresh)
        return fresh

    def _check_release(self, kind: KindRuntime) -> None:
        """Refuse a write of a kind another daemon has reconciled to another release since this
        one started: its objects may hold fields this release would drop, and indexes this
        release would leave without entries (kinds/releases.py). One key read per kind per
        transaction, in the transaction, so a reconcile committed before it is always seen."""
        expected = kind.record
        if not expected or kind.name in self._current:
            return
        raw = self.txn.get(kind.record_key)
        if raw != expected:
            raise errors.FailedPrecondition(moved_on(kind.name, expected, raw))
        self._current.add(kind.name)

    def _storable(self, kind: KindRuntime, obj: Message) -> bytes:
        """The bytes to store, if the object is within the limits every reader relies on.

        Checked before the write, in the writing transaction, so an object
        that could not be answered (over the message limit with what the
        server adds, or too deep for a list page to parse) is never stored.
        """
        limits = self.registry.limits
        # Fields this server's protos do not define were never validated or authorized here; kept,
        # a later release that defines them would take what a client planted as if checked.
        obj.DiscardUnknownFields()
        raw = obj.SerializeToString()
        desc: Any = obj.DESCRIPTOR
        if kind.can_nest and not DEPTH.fits(desc, raw, limits.max_nesting_depth):
            # Too deep, or the parser could not tell (None): the walk names the field. Content is
            # told apart from the parser's count only here, in C, at every write of the whole
            # object; its numbers and Values were checked where they came in (``validate``).
            NESTING.check(obj, limits.max_nesting_depth)
        if len(raw) > limits.max_object_bytes:
            meta = obj.metadata  # type: ignore[attr-defined]
            raise errors.ResourceExhausted(
                f"{kind.label} '{meta.slug or meta.id}' would take {len(raw)} bytes stored, more than the "
                f"{limits.max_object_bytes} an object may take (max_object_bytes)",
                reason="OBJECT_TOO_LARGE",
                metadata={"kind": kind.name, "limit": limits.max_object_bytes, "setting": ENV["max_object_bytes"]},
            )
        return raw

    def _check_owners(self, kind: KindRuntime, obj: Message, previous: Message | None = None) -> None:
        """Owner references the write adds name a served kind the caller may read in the
        object's org, and a well-formed id.

        Whether the caller may read the owner's kind is checked first, from
        the kind alone: a refusal that depended on the id would let a caller
        probe for objects it may not read (an editor for the org's API
        tokens), and an object it could attach to one would be deleted with
        it by someone who may. That the owner exists in the object's org is
        checked when the transaction publishes (``publish``), after every
        step has written: a kind's step may create an object owned by one
        its pipeline has yet to store (an agent's default instance).
        """
        if not kind.shape.has_owner_refs:
            return
        refs = obj.metadata.owner_references  # type: ignore[attr-defined]
        if not refs:
            return
        kept = frozenset(r.id for r in previous.metadata.owner_references) if previous is not None else frozenset()  # type: ignore[attr-defined]
        seen: dict[str, int] = {}
        own_id = obj.metadata.id  # type: ignore[attr-defined]
        for i, ref in enumerate(refs):
            if ref.id == own_id:  # its delete would cascade to itself
                raise errors.InvalidArgument.field(f"metadata.owner_references[{i}].id", "names the object itself")
            if ref.id in seen:
                raise errors.InvalidArgument.field(
                    f"metadata.owner_references[{i}]",
                    f"names the owner metadata.owner_references[{seen[ref.id]}] names",
                )
            seen[ref.id] = i
            owner_kind = self.registry.find(ref.kind)
            if owner_kind is not None and ref.kind != owner_kind.name:
                ref.kind = owner_kind.name  # 'agents' or 'ag' names it too: stored by its name, as read back
            if ref.id in kept:
                continue
            field = f"metadata.owner_references[{i}]"
            if owner_kind is None:
                raise errors.InvalidArgument.field(f"{field}.kind", f"'{ref.kind}' is not a kind this server serves")
            org = obj.metadata.org  # type: ignore[attr-defined]
            if not self.may_read(owner_kind, org):
                self._refuse_owner(owner_kind, org, f"{field}.kind")
            if not is_valid_id(ref.id, owner_kind.id_prefix):
                raise errors.InvalidArgument.field(
                    f"{field}.id", f"must be {owner_kind.a_label} id like '{owner_kind.id_prefix}-<ulid>'"
                )
        self._owned_by.append((kind, obj, kept))

    def _refuse_owner(self, owner_kind: KindRuntime, org: str, field: str) -> NoReturn:
        caller = cast(Caller, self._caller)  # the local administrator may read every kind
        access = owner_kind.read_access.value
        raise errors.PermissionDenied(
            f"{field}: {caller.principal} is {caller.roles[org]} in org '{org}', which does not "
            f"allow {access} access to {owner_kind.label} objects; only an object its writer may read can own it",
            metadata={"kind": owner_kind.name, "org": org, "role": caller.roles[org], "access": access, "field": field},
        )

    def _check_owners_exist(self) -> None:
        for kind, obj, kept in self._owned_by:
            meta = obj.metadata  # type: ignore[attr-defined]
            for i, ref in enumerate(meta.owner_references):
                if ref.id in kept:
                    continue
                owner_kind = self.registry.kind(ref.kind)
                owner_org = self._written.get(owner_kind.object_key(ref.id))
                if owner_org is None:  # stored before this transaction: read it
                    owner = self.get(owner_kind, ref.id)
                    owner_org = None if owner is None else owner.metadata.org  # type: ignore[attr-defined]
                if owner_org != meta.org:
                    raise errors.NotFound(
                        f"{owner_kind.label} '{ref.id}' not found in org '{meta.org}' "
                        f"(metadata.owner_references[{i}] of {kind.label} '{meta.slug}')",
                        metadata={"kind": owner_kind.name, "id": ref.id, "field": f"metadata.owner_references[{i}]"},
                    )
        self._owned_by.clear()

    # -- usage ----------------------------------------------------------------------
    def _count(self, org: str, objects: int, size: int) -> None:
        """Change ``org``'s usage by a write (read from the store once per org per transaction);
        ``publish`` holds a bound caller's whole write to the quota."""
        tally = self._usage.get(org)
        if tally is None:
            tally = self._usage[org] = Tally(org, self.txn.get(keys.org_usage_key(org)))
        tally.add(objects, size)

    def _stored_size(self, key: bytes) -> int:
        size = self._sizes.get(key)
        if size is None:  # an object this transaction did not read through here
            raw = self.txn.get(key)
            size = 0 if raw is None else len(raw)
        return size

    def keep(self, org: str, key: bytes, value: bytes, *, only_new: bool = False) -> int | None:
        """Store a value an object keeps beside itself (its versions and blobs under ``ver/``,
        which its delete clears), counted in ``org``'s bytes; returns the size of the value it
        replaced, None when there was none. ``only_new``: leave a value already there as it is."""
        was = self.txn.get(key)
        before = None if was is None else len(was)
        if only_new and before is not None:
            return before
        self._count(org, 0, len(value) - (before or 0))
        self._writer.put(key, value)
        return before

    def insert(self, kind: KindRuntime, obj: Message) -> None:
        """Write a stamped new object with its slug, index, owner and reference entries."""
        txn = self._writer
        meta = obj.metadata  # type: ignore[attr-defined]
        if not (meta.id and meta.org and meta.slug):
            raise errors.PluginFault(
                f"internal error: {kind.a_label} without an id, org or slug was to be inserted (plugin "
                f"{kind.plugin!r}): a step creates an object with Resources.create, or stamps it with "
                "stamp_new and checks its slug first"
            )
        self._check_write(kind, meta.org)
        self._check_release(kind)
        _check_stamped(kind, obj, "create")
        self.check_references(kind, obj)
        self._check_owners(kind, obj)
        if kind.shape.has_resource_version:
            meta.resource_version = txn.write_revision()
        raw = self._storable(kind, obj)
        object_key = kind.object_key(meta.id)
        self._count(meta.org, 1, len(raw))
        txn.put(object_key, raw)
        self._sizes[object_key] = len(raw)
        self._written[object_key] = meta.org
        txn.put(kind.slug_key(meta.org, meta.slug), meta.id.encode())
        for key in kind.index_keys(obj, checked=True):
            txn.put(key, b"")
        for key in kind.owner_keys(obj):
            txn.put(key, b"")
        for key, value in kind.reference_keys(obj).items():
            txn.put(key, value)
        self._event(kind, CREATED, obj, raw)

    def replace(self, kind: KindRuntime, old: Message, new: Message) -> None:
        """Overwrite an object, moving only the index entries that changed."""
        txn = self._writer
        meta = new.metadata  # type: ignore[attr-defined]
        was = old.metadata  # type: ignore[attr-defined]
        if (meta.id, meta.org, meta.slug) != (was.id, was.org, was.slug):
            changed = [name for name in ("id", "org", "slug") if getattr(meta, name) != getattr(was, name)]
            raise errors.PluginFault(
                f"internal error: an update of {kind.label} '{was.slug}' changed its metadata."
                f"{', metadata.'.join(changed)} (plugin {kind.plugin!r}): they never change, and the "
                "store's slug and index entries name them; nothing was written"
            )
        self._check_write(kind, meta.org)
        self._check_release(kind)
        _check_stamped(kind, new, "update", old)
        self.check_references(kind, new, old)
        self._check_owners(kind, new, old)
        if kind.shape.has_resource_version:
            meta.resource_version = txn.write_revision()
        raw = self._storable(kind, new)
        object_key = kind.object_key(meta.id)
        self._count(meta.org, 0, len(raw) - self._stored_size(object_key))  # the org never changes (above)
        txn.put(object_key, raw)
        self._sizes[object_key] = len(raw)
        self._written[object_key] = meta.org
        old_index, new_index = kind.index_keys(old), kind.index_keys(new, checked=True)
        old_keys = set(old_index) | set(kind.owner_keys(old))
        new_keys = set(new_index) | set(kind.owner_keys(new))
        for key in old_keys - new_keys:
            txn.discard(key)
        for key in new_keys - old_keys:
            txn.put(key, b"")
        old_refs, new_refs = kind.reference_keys(old), kind.reference_keys(new)
        for key in old_refs.keys() - new_refs.keys():
            txn.discard(key)
        for key, value in new_refs.items():
            if old_refs.get(key) != value:
                txn.put(key, value)
        moved = set(old_index) != set(new_index)
        self._event(kind, UPDATED, new, raw, previous_index=old_index if moved else None)

    def remove(self, kind: KindRuntime, obj: Message) -> None:
        """Delete an object and everything it owns, or nothing at all.

        The whole ownership tree is checked for referrers (declared
        ``references``, and what each kind's ``delete_guard`` finds) before
        anything is deleted, so a refused delete leaves no part of the tree removed.
        """
        self._check_write(kind, obj.metadata.org)  # type: ignore[attr-defined]
        # the owned and referrer entries read for the checks, removed below without reading them again:
        # on a database each read is a round trip with every other writer waiting
        scanned: dict[bytes, list[bytes]] = {}
        tree = self.owned_tree(kind, obj, scanned)
        inside = frozenset(node.metadata.id for _, node in tree)  # type: ignore[attr-defined]
        for node_kind, node in tree[1:]:  # the root is the rpc's own object, checked as its access says
            self._check_cascade(kind, node_kind, node)
        referrers = self._referrers_of(tree)
        for node_kind, node in tree:
            self.check_referrers(node_kind, node, inside, scanned, referrers[node.metadata.id])  # type: ignore[attr-defined]
            guard = node_kind.decl.delete_guard
            if guard is None:
                continue
            where = f"delete_guard of {node_kind.name}"
            if node is obj:
                _declared(node_kind, where, guard, self, node, inside)
                continue
            try:  # what the kind's own indexes know of, for a cascade too
                _declared(node_kind, where, guard, self, node, inside)
            except errors.FailedPrecondition as refused:  # said as the owner's delete, which the caller asked for
                raise _taken_along(kind, obj, node_kind, node, refused) from None
        # read before anything is removed: no removal waits to be sent first
        for start in range(0, len(tree), _READ_TOGETHER):
            prefixes = [
                keys.version_prefix(node_kind.key_prefix, node.metadata.id)  # type: ignore[attr-defined]
                for node_kind, node in tree[start : start + _READ_TOGETHER]
            ]
            for prefix, held in _by_prefix(prefixes, self.txn.sizes_under(prefixes)).items():
                scanned[prefix] = [key for key, _ in held]
                self._sizes.update(held)
        for node_kind, node in reversed(tree):  # what is owned goes first
            self._remove_one(node_kind, node, scanned)
        self.removed += tree

    def _referrers_of(self, tree: list[tuple[KindRuntime, Message]]) -> dict[str, list[tuple[bytes, bytes]]]:
        """Each object's referrer entries, by id, read a few hundred objects at a time, and the
        referrers they name outside the tree (``get_many``; the walk read those inside):
        ``check_referrers`` reads each one that may block."""
        found: dict[str, list[tuple[bytes, bytes]]] = {}
        inside = {node.metadata.id for _, node in tree}  # type: ignore[attr-defined]  # read by the walk already
        for start in range(0, len(tree), _READ_TOGETHER):
            ids = [node.metadata.id for _, node in tree[start : start + _READ_TOGETHER]]  # type: ignore[attr-defined]
            prefixes = [keys.referrer_prefix(object_id) for object_id in ids]
            wanted = []
            for object_id, (prefix, held) in zip(
                ids, _by_prefix(prefixes, self.txn.scan_many(prefixes)).items(), strict=True
            ):
                found[object_id] = held
                for key, _ in held:
                    if key.rpartition(b"/")[2].decode() in inside:
                        continue
                    key_prefix, _, referrer_id = key[len(prefix) :].decode().rpartition("/")
                    referrer_kind = self.registry.find_key_prefix(key_prefix)
                    if referrer_kind is not None:
                        wanted.append(referrer_kind.object_key(referrer_id))
            if len(wanted) > 1:
                self.txn.get_many(wanted)
        return found

    def _check_cascade(self, root: KindRuntime, kind: KindRuntime, obj: Message) -> None:
        """An owned object goes with its owner only if the caller may delete it by itself:
        a kind that asks more for a delete (an admin's) is not deleted by a lesser role
        through an owner it may delete."""
        caller = self._caller
        meta = obj.metadata  # type: ignore[attr-defined]
        if caller is None or caller.can(kind.delete_access, meta.org):
            return
        # Named only to a caller that may read it: the refusal must not reveal what it may not.
        named = f"{kind.label} '{meta.slug}'" if self.may_read(kind, meta.org) else f"an owned {kind.label}"
        raise errors.PermissionDenied(
            f"deleting this {root.label} would delete {named} with it, which needs "
            f"{kind.delete_access.value} access; {caller.principal} is {caller.roles[meta.org]} in org '{meta.org}'"
        )

    def _remove_one(self, kind: KindRuntime, obj: Message, scanned: dict[bytes, list[bytes]]) -> None:
        self._check_release(kind)
        txn = self._writer
        meta = obj.metadata  # type: ignore[attr-defined]
        object_ranges = (
            keys.owned_prefix(meta.id),
            keys.referrer_prefix(meta.id),
        )
        # discard: a store whose deletes are round trips sends a cascade's together
        discard = txn.discard
        for prefix in object_ranges:
            found = scanned.get(prefix)
            for key in [key for key, _ in self.txn.scan(prefix)] if found is None else found:
                discard(key)  # finished referrers keep a dangling id, by design
        kept = 0
        versions = scanned.get(keys.version_prefix(kind.key_prefix, meta.id))
        if versions is None:
            versions = [key for key, _ in self.txn.scan(keys.version_prefix(kind.key_prefix, meta.id))]
        for key in versions:
            kept += self._stored_size(key)
            self._sizes.pop(key, None)
            discard(key)
        object_key = kind.object_key(meta.id)
        self._count(meta.org, -1, -kept - self._stored_size(object_key))
        discard(object_key)
        self._sizes.pop(object_key, None)
        self._written.pop(object_key, None)
        discard(kind.slug_key(meta.org, meta.slug))
        for key in kind.index_keys(obj):
            discard(key)
        for key in kind.owner_keys(obj):
            discard(key)
        for key in kind.reference_keys(obj):
            discard(key)
        self._event(kind, DELETED, obj, obj.SerializeToString())

    def create(self, kind: KindRuntime, obj: Message, *, org: str, principal: str, fallback_slug: str = "") -> Message:
        """Create an object of any kind from inside another kind's step.

        The same checks and stamping as the create pipeline, minus the
        request-level validation the caller is responsible for.
        ``fallback_slug``: the slug to take when the object's is taken (an
        owner's derived object, named after it), read together with it.
        """
        meta = obj.metadata  # type: ignore[attr-defined]
        if not meta.slug:
            meta.slug = unlike_id(slugify(meta.name)) or kind.id_prefix
        self.stamp_new(kind, obj, org=org, principal=principal)
        self.check_slug_free(kind, obj, fallback_slug)
        self.insert(kind, obj)
        return obj

    # -- events ------------------------------------------------------------------
    def _event(
        self, kind: KindRuntime, event_type: int, obj: Message, raw: bytes, previous_index: list[bytes] | None = None
    ) -> None:
        """Queue an event; a kind that declares ``redact`` has its events stored redacted.

        The event log outlives the object's states (an update's event keeps the
        state it replaced until retention drops it), so nothing a response would
        hide is kept there: every reader redacts anyway, and a secret sealed in
        an old state must not stay recoverable from the log after the object
        has moved on (a finished run's context, a replaced API key).
        """
        redact = kind.redact
        if redact is not None and kind.hides(obj):
            shown = kind.parse(raw)
            redact(shown)
            raw = shown.SerializeToString()
        meta: Any = obj.metadata  # type: ignore[attr-defined]
        self._events.append((event_type, kind.name, meta.id, meta.org, raw, previous_index))

    def created_besides(self, answered: Message | None) -> list[str]:
        """``CREATED_MARK``-ed trailer entries (``headers.DRY_RUN_CREATED``) naming the objects this
        write created other than ``answered``: read from its events (``published`` set before it
        ran), for a dry run only."""
        own = getattr(getattr(answered, "metadata", None), "id", "")
        found = []
        for event_type, kind_name, object_id, org, raw, _ in [*(self.published or ()), *self._events]:
            if event_type != CREATED or object_id == own:
                continue
            kind = self.registry.find(kind_name)
            slug = kind.parse(raw).metadata.slug if kind is not None else ""  # type: ignore[attr-defined]
            found.append(f"{CREATED_MARK}{kind_name} {object_id} {slug} {org}")
        return found

    def publish(self) -> None:
        """Append the events of this transaction's writes to the event log.

        Runs last in every writing transaction, so the checks that need the
        whole transaction's writes happen here: owners exist, a bound caller's
        orgs stay within their quota (kinds/usage.py), and the write is within
        ``Limits.max_objects_per_write`` (one event each).
        """
        self._check_owners_exist()
        for tally in self._usage.values():
            if self._quota is not None:
                tally.check(self._quota)
            tally.write(self._writer)
        if not self._events:
            return
        limit = self.registry.limits.max_objects_per_write
        if len(self._events) > limit:
            raise errors.ResourceExhausted(
                f"this write would change {len(self._events)} objects, more than one write may change "
                f"({limit}, max_objects_per_write)",
                reason="WRITE_TOO_LARGE",
                metadata={"limit": limit, "setting": ENV["max_objects_per_write"]},
            )
        txn = self._writer
        revision = txn.write_revision()
        now = self.now()
        principal = self.principal
        for event_type, kind_name, object_id, org, raw, previous_index in self._events:
            event = event_pb2.ResourceEvent(
                type=event_type,  # type: ignore[arg-type]
                kind=kind_name,
                id=object_id,
                object=raw,
                principal=principal,
                revision=revision,
                time=now,
                org=org,
            )
            if previous_index is not None:  # a filtered watch tells entering and leaving from these
                event.index_keys_changed = True
                event.previous_index_keys.extend(previous_index)
            txn.append_event(event.SerializeToString(), org)  # the org's share of the log (store.retention)
        if self.published is not None:
            self.published += self._events
        self._events.clear()


def _taken_along(
    root: KindRuntime, obj: Message, kind: KindRuntime, node: Message, refused: errors.FailedPrecondition
) -> errors.FailedPrecondition:
    """A guard's refusal of an object an owner's delete would take with it, said as that delete's:
    the caller asked to delete the owner, and may not know it owns what is held."""
    owner, owned = obj.metadata, node.metadata  # type: ignore[attr-defined]
    return errors.FailedPrecondition(
        f"deleting {root.label} '{owner.slug}' would delete {kind.label} '{owned.slug}' with it (it owns it), "
        f"but {refused.message}",
        reason=refused.reason,
        metadata={**refused.metadata, "deletedWith": root.name, "deletedWithId": owner.id},
    )


def _check_stamped(kind: KindRuntime, obj: Message, write: str, old: Message | None = None) -> None:
    """Refuse an object whose ``api_version`` a step changed from what the framework stamps (the
    stored one's, for an update of an object written under an earlier api_version): stored, it
    read as another release's, and every export holding it was refused by import. Its ``kind``
    a step may set, to the name a published wire contract gives it (``StigmerAgent`` stored as
    ``Agent``: examples/stigmer-published-api)."""
    version = kind.api_version
    found = getattr(obj, "api_version", version)
    if found == version or (old is not None and found == getattr(old, "api_version", None)):
        return
    raise errors.PluginFault(
        f"internal error: a step of {kind.label} {write} changed its api_version to {found!r} (plugin "
        f"{kind.plugin!r}): the framework stamps it ({version}) and it never changes; nothing was written"
    )


def _parse(kind: KindRuntime, object_id: str, raw: bytes) -> Message:
    try:
        return kind.parse(raw)
    except DecodeError:  # only an object stored before writes were held to the nesting limit
        raise errors.FailedPrecondition(
            f"{kind.label} '{object_id}' is stored in a form protobuf cannot parse (nested deeper than it "
            "allows, written before the nesting limit); it cannot be read through the API"
        ) from None
