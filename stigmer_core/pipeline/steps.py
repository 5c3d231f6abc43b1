"""The standard steps every kind's default pipelines are made of.

Each is a ``FunctionStep`` with one signature over ``RequestContext``; kinds
reuse them in custom operations and plugins place their own around them by
phase. None of them knows a message type: they reach fields by the names the
resource conventions fix (``metadata.id``, ``metadata.slug``, ``value`` of an
id message, ``org``/``slug``/``id`` of a reference).
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from google.protobuf.message import DecodeError, Message

from stigmer_core import errors
from stigmer_core.auth.pages import EXTENSION as PAGE_TOKENS
from stigmer_core.auth.pages import PAGE_TOKEN_INVALID, PageTokens
from stigmer_core.ids import looks_like_id, slugify
from stigmer_core.kinds.declaration import IndexSpec
from stigmer_core.kinds.nesting import NESTING
from stigmer_core.kinds.resources import id_shaped_slug, taken_elsewhere
from stigmer_core.kinds.runtime import LABEL_INDEX, FieldPath, KindRuntime
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.answers import BlanksAnswer, shown
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import Step, run_steps, step
from stigmer_core.store import keys

DEFAULT_PAGE_SIZE = 100
ENTRY_OVERHEAD = 16
"""Bytes a list entry adds to its object: the field tag and the length."""
TOKEN_ROOM = 1024
"""Bytes kept in a page for its next_page_token (a base64 store key, keys being at most 511 bytes)."""


def _input(ctx: RequestContext) -> Message:
    found = ctx.kind.resource_in(ctx.request)
    if found is None:  # pragma: no cover - the registry only binds methods that carry one
        raise errors.InvalidArgument.field("resource", "the request carries no resource")
    return found


def _org(ctx: RequestContext, org: str) -> str:
    return org or ctx.default_org


@step(Phase.VALIDATE)
def validate(ctx: RequestContext) -> None:
    """Declared field rules (protovalidate) of the whole request, then its nesting and its
    ``Value``s (finite numbers, a kind set): checked here, before the transaction, with the
    request's own field paths and at the cost of the request alone. A write checks the depth of
    the whole object again, in C (``depth_probe``): a step may nest what it was sent deeper."""
    validation.check(ctx.request)
    NESTING.check(ctx.request, ctx.registry.limits.max_nesting_depth)


def _named_org(ctx: RequestContext) -> str:
    """The org a request names itself (a resource's metadata.org, a list's or a reference's org)."""
    req = ctx.request
    kind = ctx.kind
    wrapper = kind.resource_field
    if type(req) is kind.resource_cls or (wrapper is not None and wrapper in req.DESCRIPTOR.fields_by_name):
        resource = kind.resource_in(req)
        return str(resource.metadata.org)  # type: ignore[union-attr]
    org = getattr(req, "org", "")
    return org if isinstance(org, str) else ""


@step(Phase.AUTHORIZE)
def authorize(ctx: RequestContext) -> None:
    """The caller's role must allow the rpc's access in the org the request names.

    The framework puts this step in every pipeline. The caller was
    authenticated, and found to hold the access in some org, before the
    pipeline ran; objects found by id are checked where they are read
    (``Resources``: another org's object is NOT_FOUND, a write needs the
    access in the object's org). An org the caller does not belong to is
    answered as not found, so membership of others is not revealed.
    Plugins may add their own steps at ``Phase.AUTHORIZE``.
    """
    caller = ctx.caller
    if caller.unrestricted:
        return
    org = _named_org(ctx)
    if not org:
        return
    if not caller.member_of(org):
        raise errors.OrgNotVisible(f"org '{org}' not found", metadata={"org": org})
    if not caller.can(ctx.access, org):
        raise errors.PermissionDenied(
            f"{caller.principal} is {caller.roles[org]} in org '{org}', which does not allow "
            f"{ctx.access.value} access ({ctx.kind.name}.{ctx.operation})",
            metadata={"kind": ctx.kind.name, "org": org, "role": caller.roles[org], "access": ctx.access.value},
        )


def _version_given(ctx: RequestContext, meta: Any) -> int:
    return int(meta.resource_version) if ctx.kind.shape.has_resource_version else 0


def _gone(ctx: RequestContext, meta: Any, given: int, then: str) -> errors.NotFound:
    """The refusal of a write guarded by a version of an object that is not stored: it was read,
    then deleted. Writing it anyway would bring the object back and undo that delete while both
    clients were told they had succeeded."""
    if meta.id:
        named = f"{ctx.kind.label} '{meta.id}'"
        where: dict[str, object] = {"id": meta.id}
    else:
        named = f"{ctx.kind.label} '{meta.slug}' in org '{ctx.org}'"
        where = {"slug": meta.slug, "org": ctx.org}
    return errors.NotFound(
        f"{named} is not stored: metadata.resource_version {given} names a version of a stored object "
        f"(this one was deleted since it was read, or was never written here); {then}",
        metadata={"kind": ctx.kind.name, **where, "resourceVersion": given},
    )


@step(Phase.LOAD)
def resolve_slug(ctx: RequestContext) -> None:
    """Default the org, and derive the slug from the name when none is given.

    A create carrying a ``resource_version`` is refused (as Kubernetes does): a new object has no
    version, and a client that sends one believes it is writing over something it read. A slug
    shaped like an id is refused unless the create gives the object's own id, as an import
    restoring a backup does: a store written before the refusal may hold such slugs.
    """
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    if _version_given(ctx, meta):
        raise errors.InvalidArgument.field(
            "metadata.resource_version",
            "must be 0 or unset on create (a new object has no version yet); to write over an "
            "object read earlier, update or apply it",
        )
    if not meta.slug:
        meta.slug = slugify(meta.name)
        if not meta.slug:
            raise errors.InvalidArgument.field(
                "metadata.name",
                "needs at least one ASCII letter or digit (a-z, 0-9) to derive a slug from (or give metadata.slug)",
            )
        if looks_like_id(meta.slug) and not meta.id:
            raise id_shaped_slug(meta.slug, "metadata.name", derived=True)
    elif looks_like_id(meta.slug) and not meta.id:  # one giving its own id restores an object as it was
        raise id_shaped_slug(meta.slug)  # (an import of a store written before this was refused)


@step(Phase.CHECK)
def check_duplicate(ctx: RequestContext) -> None:
    obj = _input(ctx)
    obj.metadata.org = ctx.org  # type: ignore[attr-defined]
    ctx.store.check_slug_free(ctx.kind, obj)


@step(Phase.BUILD)
def build_new_state(ctx: RequestContext) -> None:
    obj = ctx.kind.resource_cls()
    obj.CopyFrom(_input(ctx))
    ctx.store.stamp_new(ctx.kind, obj, org=ctx.org, principal=ctx.principal)
    ctx.resource = obj
    meta: Any = obj.metadata  # type: ignore[attr-defined]
    ctx.identity = (meta.id, meta.org, meta.slug)


@step(Phase.PERSIST)
def persist_new(ctx: RequestContext) -> None:
    """Store the new object, refusing one whose id, org or slug a step changed since they were
    checked and stamped: its slug was never checked free, nor its id unused, so the write
    replaced another object or gave two objects one slug."""
    assert ctx.resource is not None
    meta: Any = ctx.resource.metadata  # type: ignore[attr-defined]
    if (meta.id, meta.org, meta.slug) != ctx.identity:
        changed = [name for name, was in zip(("id", "org", "slug"), ctx.identity, strict=True) if getattr(meta, name) != was]
        raise errors.PluginFault(
            f"internal error: a step of {ctx.kind.label} create changed its metadata.{', metadata.'.join(changed)} "
            f"(plugin {ctx.kind.plugin!r}): they are checked and stamped before the kind's steps run, and "
            "never change; nothing was written"
        )
    ctx.store.insert(ctx.kind, ctx.resource)


@step(Phase.LOAD)
def load_existing(ctx: RequestContext) -> None:
    """The object an update acts on: by ``metadata.id``, else by org + slug."""
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    given = _version_given(ctx, meta)
    if meta.id:
        # Another org's object is answered as one never stored: telling the two apart would say
        # that the id is held elsewhere (docs/security.md, Orgs are walls).
        if given and ctx.store.get(ctx.kind, meta.id) is None:
            raise _gone(ctx, meta, given, "nothing was written")
        existing = ctx.store.require(ctx.kind, meta.id)
        stored = existing.metadata  # type: ignore[attr-defined]
        if meta.org and meta.org != stored.org:
            raise errors.InvalidArgument.field(
                "metadata.org",
                f"is immutable: id '{meta.id}' names the {ctx.kind.label} stored in org '{stored.org}', and an "
                "object never moves to another org",
            )
        if meta.slug and meta.slug != stored.slug:
            raise errors.InvalidArgument.field("metadata.slug", f"is immutable (stored: '{stored.slug}')")
    elif meta.slug:
        if given and ctx.store.id_for_slug(ctx.kind, ctx.org, meta.slug) is None:
            raise _gone(ctx, meta, given, "nothing was written")
        existing = ctx.store.require_slug(ctx.kind, ctx.org, meta.slug)
    else:
        raise errors.InvalidArgument.field("metadata.id", "an update needs metadata.id or metadata.slug")
    ctx.existing = existing
    ctx.read_as = _copy(existing)


def _copy(obj: Message) -> Message:
    kept = type(obj)()
    kept.CopyFrom(obj)
    return kept


def _left_as_read(ctx: RequestContext) -> None:
    """Refuse a write whose steps changed ``ctx.existing``: what an update compares and moves
    index entries by, and a delete removes them by. An update whose step copied its change into
    ``existing`` was answered unchanged and never written, and one that changed more was stored
    with its index entries left under the old value."""
    if ctx.read_as is not None and ctx.existing != ctx.read_as:
        meta: Any = ctx.existing.metadata  # type: ignore[union-attr]
        raise errors.PluginFault(
            f"internal error: a step of {ctx.kind.label} {ctx.operation} changed ctx.existing, the stored "
            f"{ctx.kind.label} '{meta.slug}' as read (plugin {ctx.kind.plugin!r}): a step reads it and changes "
            "ctx.resource; nothing was written"
        )


@step(Phase.CHECK)
def check_version(ctx: RequestContext) -> None:
    """Optimistic concurrency: a non-zero resource_version must be current."""
    if not ctx.kind.shape.has_resource_version:
        return
    given = _input(ctx).metadata.resource_version  # type: ignore[attr-defined]
    stored = ctx.existing.metadata.resource_version  # type: ignore[union-attr]
    if given and given != stored:
        meta = ctx.existing.metadata  # type: ignore[union-attr]
        raise errors.Conflict.version(
            f"{ctx.kind.label} '{meta.slug}'", given, stored, kind=ctx.kind.name, object_id=meta.id
        )


@step(Phase.BUILD)
def build_update_state(ctx: RequestContext) -> None:
    """Spec and mutable metadata from the request; the rest as stored."""
    assert ctx.existing is not None
    given = _input(ctx)
    new = ctx.kind.resource_cls()
    new.CopyFrom(ctx.existing)
    new.api_version = ctx.kind.api_version  # type: ignore[attr-defined]  # as a create's: a kind's api_version changed since
    meta, gmeta = new.metadata, given.metadata  # type: ignore[attr-defined]
    meta.name = gmeta.name
    for field in ("labels", "annotations") if ctx.kind.shape.has_annotations else ("labels",):
        target = getattr(meta, field)
        target.clear()
        target.update(getattr(gmeta, field))
    del meta.tags[:]
    meta.tags.extend(gmeta.tags)
    if ctx.kind.shape.has_spec:
        if given.HasField("spec"):
            new.spec.CopyFrom(given.spec)  # type: ignore[attr-defined]
        else:
            new.ClearField("spec")
    ctx.resource = new


@step(Phase.PERSIST)
def persist_update(ctx: RequestContext) -> None:
    """Write the new state, unless neither the request nor any kind step changed it.

    Decided here, after every kind step, because a step may restore stored
    values (a kept ciphertext) or derive new ones; an update that changes
    nothing writes nothing and answers the stored object as it is.
    """
    assert ctx.existing is not None and ctx.resource is not None
    _left_as_read(ctx)
    ctx.resource.DiscardUnknownFields()  # as the write would (Resources._storable): else never equal
    ctx.unchanged = ctx.resource == ctx.existing
    if ctx.unchanged:
        ctx.resource = ctx.existing
        return
    ctx.store.stamp_update(ctx.kind, ctx.resource, principal=ctx.principal)
    ctx.store.replace(ctx.kind, ctx.existing, ctx.resource)


@step(Phase.LOAD)
def load_by_id(ctx: RequestContext) -> None:
    ctx.existing = ctx.store.require(ctx.kind, ctx.request.value)  # type: ignore[attr-defined]
    ctx.resource = ctx.existing
    if ctx.operation == "delete":  # what it removes index entries by; a read has nothing to guard
        ctx.read_as = _copy(ctx.existing)


def _other_kind(ctx: RequestContext, given: Any) -> str | None:
    """How a reference's ``kind`` reads when it names a kind other than this one; None when it names this one."""
    named = ctx.kind.reference_kinds
    if named is None:
        return None if ctx.registry.find(given) is ctx.kind else str(given)
    if given in named:
        return None
    enum: Any = ctx.request.DESCRIPTOR.fields_by_name["kind"].enum_type
    value = enum.values_by_number.get(given)
    return str(given) if value is None else str(value.name)


RESOLVE_VERSION = "versioning_resolve"
"""The name of the step a versioned kind's getByReference picks a version with (``versioning``)."""


def resolves_versions(kind: KindRuntime) -> bool:
    """Whether a reference to ``kind`` may name a version: read only when one does."""
    return any(s.name == RESOLVE_VERSION for s in kind.pipelines["getByReference"].txn)


def no_versions(kind: KindRuntime, field: str) -> errors.InvalidArgument:
    """A reference naming a version of a kind that keeps none: the version was ignored, and the
    object's current state answered as if it were that version."""
    return errors.InvalidArgument.field(
        field, f"{kind.label} objects keep no versions (a skill does): leave the version out"
    )


@step(Phase.LOAD)
def load_by_reference(ctx: RequestContext) -> None:
    """Resolve a reference: by id, else by org + slug. An empty kind means this kind. A
    reference giving both a slug and an id must give the slug of the object with that id."""
    ref: Any = ctx.request
    other = _other_kind(ctx, ref.kind) if ref.kind else None
    if other is not None:
        raise errors.InvalidArgument.field(
            "kind", f"'{other}' is not {ctx.kind.name}; send the reference to that kind's service"
        )
    if getattr(ref, "version", "") and not resolves_versions(ctx.kind):
        raise no_versions(ctx.kind, "version")
    if ref.id:
        found = ctx.store.require(ctx.kind, ref.id)
        if ref.org and found.metadata.org != ref.org:  # type: ignore[attr-defined]
            raise errors.NotFound(
                f"{ctx.kind.label} '{ref.id}' not found in org '{ref.org}'",
                metadata={"kind": ctx.kind.name, "id": ref.id, "org": ref.org},
            )
        if ref.slug and found.metadata.slug != ref.slug:  # type: ignore[attr-defined]
            raise errors.InvalidArgument.field(
                "slug",
                f"gives slug '{ref.slug}' and id '{ref.id}', which do not name the same {ctx.kind.label}: "
                "give one of them",
            )
    elif ref.slug:
        found = ctx.store.require_slug(ctx.kind, _org(ctx, ref.org), ref.slug)
    else:
        raise errors.InvalidArgument.field("slug", "a reference needs a slug or an id")
    ctx.existing = ctx.resource = found


@step(Phase.PERSIST)
def delete(ctx: RequestContext) -> None:
    """Delete the loaded object and everything it owns."""
    assert ctx.existing is not None
    _left_as_read(ctx)
    ctx.store.remove(ctx.kind, ctx.existing)


@step(Phase.PUBLISH)
def publish(ctx: RequestContext) -> None:
    """Append this transaction's events to the event log."""
    ctx.store.publish()


@step(Phase.REDACT)
def redact(ctx: RequestContext) -> None:
    """Blank what a kind declares secret before anything leaves the server."""
    kind = ctx.kind
    hide = kind.redact
    if hide is None:
        return
    found = ctx.resource
    if found is not None and kind.hides(found):
        copy = kind.resource_cls()
        copy.CopyFrom(found)
        hide(copy)
        ctx.resource = copy
        if ctx.response is found:  # a custom rpc's step answered with the object already
            ctx.response = copy
    answer = ctx.response
    if answer is None or answer is ctx.resource or not isinstance(answer, Message):
        return  # a stream's responses are blanked as they are sent (``answers.blank_sent``)
    ctx.response = shown(kind, answer)  # a custom rpc's step answered with a message of its own


@step(Phase.RESPOND)
def respond(ctx: RequestContext) -> None:
    if ctx.response is None:
        ctx.response = ctx.resource


def _decode_token(token: str, scan: _Range) -> bytes:
    if not token:
        return b""
    try:
        after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        after = b""
    prefix = scan.prefix
    if after.startswith(prefix):
        return after
    for sibling in scan.siblings:  # the same listing read through another of its labels' ranges
        if after.startswith(sibling):
            return prefix + after[len(sibling) :]
    raise errors.InvalidArgument.field("page_token", "is not a token this query returned", reason=PAGE_TOKEN_INVALID)


class _Range:
    """One key range a list reads, and how its keys lead to objects. ``siblings``: ranges
    answering the same list in the same order (ids), whose page tokens it continues."""

    __slots__ = ("by_object", "by_slug", "prefix", "siblings")

    def __init__(
        self, prefix: bytes, *, by_object: bool = False, by_slug: bool = False, siblings: tuple[bytes, ...] = ()
    ) -> None:
        self.prefix = prefix
        self.by_object = by_object
        self.by_slug = by_slug
        self.siblings = siblings


FIRST_OBJECTS = 16
"""Objects a page read through an index (slugs, labels, a declared index) gets in its first
``get_many``; later batches are sized from the objects seen to what the page's bytes still hold,
up to ``MOST_OBJECTS``. On a database every get was a round trip (a page of 100 by slug: 100,
15.9 ms in process against 1.2 for a page of the kind's own range), and a batch's objects are
held at once: up to this many of the largest an object may be."""
MOST_OBJECTS = 128


def _objects_of(
    txn: Any, kind: KindRuntime, scan: _Range, entries: Iterator[tuple[bytes, bytes]], wanted: int, budget: int
) -> Iterator[tuple[bytes, bytes | None]]:
    """(index key, its object's stored bytes, None for none) for each of ``entries``, the objects
    read a batch at a time (``FIRST_OBJECTS``); ``wanted``: entries the page reads at most
    unless it skips some, ``budget``: its bytes."""
    prefix, by_slug, key_prefix = scan.prefix, scan.by_slug, kind.key_prefix
    batch = max(1, min(wanted, FIRST_OBJECTS))  # a custom step may pass any size
    seen = held = 0
    while True:
        chunk = list(itertools.islice(entries, batch))
        if not chunk:
            return
        found = txn.get_many(
            [keys.object_key(key_prefix, (value if by_slug else key[len(prefix) :]).decode()) for key, value in chunk]
        )
        yield from zip([key for key, _ in chunk], found, strict=True)
        if len(chunk) < batch:
            return
        wanted -= len(chunk)
        sizes = [len(raw) for raw in found if raw is not None]
        seen, held = seen + len(sizes), held + sum(sizes)
        batch = max(1, min(MOST_OBJECTS, budget * seen // max(held, 1)))  # as many as the page's bytes hold
        if wanted > 0:  # no further than the page reads unless it skipped some: past it, the
            batch = min(batch, wanted)  # scan would fetch entries no one reads


def _page(ctx: RequestContext, scan: _Range, keep: Callable[[Message], bool] | None, size: int, token: str) -> Message:
    """Read one page of ``scan``: at most ``size`` objects that ``keep`` accepts,
    within ``Limits.max_page_bytes``, reading at most ``Limits.max_list_skipped``
    objects that ``keep`` rejects (the page then ends early, even empty, with a token).

    The byte budget is checked before an object is added, so a page never
    passes it; the first object always fits, because no stored object may
    be larger than a page (``Limits.max_object_bytes``).

    When nothing needs to look inside the objects (no extra condition, no
    redaction) the page is assembled from the stored bytes and parsed once,
    rather than parsing, copying and re-serialising every entry.
    """
    kind = ctx.kind
    txn = ctx.store.txn
    prefix = scan.prefix
    raw_page = keep is None and kind.redact is None
    entries: list[Message] = []
    wire: list[bytes] = []
    listed: list[bytes] = []
    count = 0
    limits = ctx.registry.limits
    budget = limits.max_page_bytes - TOKEN_ROOM
    skips = limits.max_list_skipped
    last = b""
    more = False
    stored: Iterator[tuple[bytes, bytes]] = txn.scan(prefix, after=_decode_token(token, scan), first=size + 1)
    read = stored if scan.by_object else _objects_of(txn, kind, scan, stored, size + 1, budget)
    for key, value in read:
        if count >= size or skips <= 0:
            more = True
            break
        if value is None:  # an entry of a value that holds the separator (a tag with a NUL), read past
            last = key
            skips -= 1
            continue
        if raw_page:
            cost = len(value) + ENTRY_OVERHEAD
            if count and cost > budget:
                more = True
                break
            last = key
            budget -= cost
            count += 1
            wire += (kind.entries_tag, keys.varint(len(value)), value)
            listed.append(key)
            continue
        obj = kind.parse(value)
        if keep is not None and not keep(obj):
            last = key
            skips -= 1
            continue
        if kind.redact is not None:
            kind.redact(obj)  # what is sent, not what is stored, counts: a marker can be longer
            cost = obj.ByteSize() + ENTRY_OVERHEAD
        else:
            cost = len(value) + ENTRY_OVERHEAD
        if count and cost > budget:
            more = True
            break
        last = key
        budget -= cost
        count += 1
        entries.append(obj)
    page = kind.list_cls()
    if raw_page:
        try:
            page.MergeFromString(b"".join(wire))
        except DecodeError:
            raise _unlistable(ctx, scan, listed, wire[2::3]) from None
    else:
        page.entries.extend(entries)  # type: ignore[attr-defined]
    if more:
        page.next_page_token = base64.urlsafe_b64encode(last).rstrip(b"=").decode()  # type: ignore[attr-defined]
    return page


def _unlistable(ctx: RequestContext, scan: _Range, listed: list[bytes], stored: list[bytes]) -> errors.StigmerError:
    """The error for a page protobuf cannot parse, naming the object: one stored before
    writes were held to ``Limits.max_nesting_depth`` can nest too deep for a list."""
    kind = ctx.kind
    for key, value in zip(listed, stored, strict=True):
        try:
            kind.list_cls.FromString(kind.entries_tag + keys.varint(len(value)) + value)
        except DecodeError:
            named = ctx.store.txn.get(key) if scan.by_slug else key[len(scan.prefix) :]
            object_id = (named or b"?").decode()
            return errors.FailedPrecondition(
                f"{kind.label} '{object_id}' is stored nested deeper than a list can carry "
                "(written before the nesting limit); delete it, or update it by id to nest less"
            )
    return errors.FailedPrecondition(f"a page of {kind.label} objects cannot be assembled")  # pragma: no cover


def _has_index_values(kind: KindRuntime, index: IndexSpec, wanted: list[tuple[str, ...]]) -> Callable[[Message], bool]:
    def check(obj: Message) -> bool:
        present = set(kind.index_values(index, obj))
        return all(w in present for w in wanted)

    return check


def _list_range(
    ctx: RequestContext, req: Any, org: str, labels: dict[str, str]
) -> tuple[_Range, Callable[[Message], bool] | None]:
    """The narrowest key range answering a list in ``org`` ("" for every org), and what it leaves to check."""
    kind = ctx.kind
    filters = [(f, values) for f in kind.list_filters if (values := f.field.read(req))]
    # Conditions the chosen range does not already guarantee are checked on the objects.
    conditions: list[Callable[[Message], bool]] = []
    if filters:
        first, values = filters[0]
        scope = (org,) if first.index.org_scoped else ()
        scan = _Range(keys.index_prefix(kind.key_prefix, first.index.name, (*scope, values[0])))
        if org and not first.index.org_scoped:
            conditions.append(lambda o: o.metadata.org == org)  # type: ignore[attr-defined]
        rest = [(first, values[1:]), *filters[1:]] if len(values) > 1 else filters[1:]
        unchecked_labels = labels
    elif labels:
        ranges = {label: keys.index_prefix(kind.key_prefix, LABEL_INDEX, (org, *label)) for label in sorted(labels.items())}
        label_key, label_value = _narrowest(ctx, ranges)
        chosen = ranges.pop((label_key, label_value))
        scan = _Range(chosen, siblings=tuple(ranges.values()))
        rest = []
        unchecked_labels = {k: v for k, v in labels.items() if k != label_key}
    elif org:
        scan = _Range(keys.slug_prefix(kind.key_prefix, org), by_slug=True)
        rest, unchecked_labels = [], {}
    else:
        scan = _Range(keys.object_prefix(kind.key_prefix), by_object=True)
        rest, unchecked_labels = [], {}
    if unchecked_labels:
        conditions.append(
            lambda o: all(o.metadata.labels.get(k) == v for k, v in unchecked_labels.items())  # type: ignore[attr-defined]
        )
    for list_filter, wanted in rest:
        conditions.append(_has_index_values(kind, list_filter.index, [(v,) for v in wanted]))
    keep = (lambda o: all(c(o) for c in conditions)) if conditions else None
    return scan, keep


LABEL_PROBE = 64
"""Entries of each label's index a list selecting several labels reads at most to find the label
with fewest objects, whose range the page then reads (every other label is checked on the objects)."""


def _narrowest(ctx: RequestContext, ranges: dict[tuple[str, str], bytes]) -> tuple[str, str]:
    """The label (of ``ranges``, in order) whose index range ends first when all are read in
    step, up to ``LABEL_PROBE`` entries each; the first when none does. A page read from a label
    shared by 10,000 of an org's agents, when another label of the selector had 50, passed up to
    ``max_list_skipped`` objects to find a few (88-101 ms a page on PostgreSQL, against 11-16)."""
    labels = list(ranges)
    if len(labels) == 1:
        return labels[0]
    txn = ctx.store.txn
    scans = [txn.scan(prefix, first=LABEL_PROBE) for prefix in ranges.values()]
    try:
        for _ in range(LABEL_PROBE):
            for label, entries in zip(labels, scans, strict=True):
                if next(entries, None) is None:
                    return label
        return labels[0]
    finally:
        for entries in scans:
            close = getattr(entries, "close", None)
            if close is not None:
                close()


def page_tokens(ctx: RequestContext) -> PageTokens:
    """The application's page-token sealer (every query that pages seals its tokens with it)."""
    found = ctx.registry.extensions.get(PAGE_TOKENS)
    if not isinstance(found, PageTokens):  # pragma: no cover - the Application sets it up
        raise RuntimeError("page tokens are not configured for this application")
    return found


def _bound_page(
    ctx: RequestContext,
    orgs: tuple[str, ...],
    page_range: Callable[[str], tuple[_Range, Callable[[Message], bool] | None]],
) -> Message:
    """One page of a list over ``orgs`` in turn (one entry, "" or an org, for most lists),
    with a page token bound to the kind, the org being paged and the request's filter."""
    req: Any = ctx.request
    tokens = page_tokens(ctx)
    kind_name = ctx.kind.name
    fingerprint = b""  # computed only when a token is read or made: most lists need none

    def bound_to() -> bytes:
        nonlocal fingerprint
        if not fingerprint:
            fingerprint = tokens.fingerprint(req) + b"."
        return fingerprint

    org, inner = orgs[0], ""
    if req.page_token:
        org, inner = tokens.open(kind_name, bound_to(), req.page_token)
        if org not in orgs:
            raise errors.InvalidArgument.field(
                "page_token", "was issued for another org; restart the listing", reason=PAGE_TOKEN_INVALID
            )
    size = req.page_size or DEFAULT_PAGE_SIZE
    position = orgs.index(org)
    while True:
        scan, keep = page_range(org)
        page = _page(ctx, scan, keep, size, inner)
        shown: Any = page
        if shown.next_page_token:
            shown.next_page_token = tokens.seal(kind_name, bound_to(), org, shown.next_page_token)
            return page
        position += 1
        if position == len(orgs):
            return page
        org, inner = orgs[position], ""
        if shown.entries:
            shown.next_page_token = tokens.seal(kind_name, bound_to(), org, "")
            return page


def _orgs_listed(ctx: RequestContext, org: str) -> tuple[str, ...]:
    """The orgs a list reads, one after another: the one it names, else all
    (one range) for the administrator, else each org of the caller's."""
    caller = ctx.caller
    if org or caller.unrestricted:
        return (org,)
    return tuple(o for o in caller.orgs if caller.can(ctx.access, o))  # a kind may need more than READ to list


def _both(first: Callable[[Message], bool] | None, second: Callable[[Message], bool]) -> Callable[[Message], bool]:
    return second if first is None else (lambda o: first(o) and second(o))


@step(Phase.LOAD)
def list_page(ctx: RequestContext) -> None:
    """One page, read from the narrowest key range that answers the request:
    a declared index when a filter field is set, a label index when labels
    are, the org's slug index when only the org is, else the kind's object
    range. Other conditions are checked on the objects of that range. A
    caller restricted to some orgs that names none pages through its orgs'
    ranges one org after another."""
    req: Any = ctx.request
    kind = ctx.kind
    if kind.unread_list_fields:
        _refuse_unread(kind, req)
    org = req.org if kind.list_shape.has_org else ""
    labels = dict(req.labels) if kind.list_shape.has_labels else {}
    validation.check_label_selector(kind, labels)
    orgs = _orgs_listed(ctx, org)
    if not orgs:
        ctx.response = kind.list_cls()
        return
    if kind.list_shape.has_org or ctx.caller.unrestricted:
        ctx.response = _bound_page(ctx, orgs, lambda o: _list_range(ctx, req, o, labels))
        return

    def in_org(o: str) -> tuple[_Range, Callable[[Message], bool] | None]:
        # A list request with no org field: the all-orgs range, each org's objects in turn.
        scan, keep = _list_range(ctx, req, "", labels)
        return scan, _both(keep, _in_org(o))

    ctx.response = _bound_page(ctx, orgs, in_org)


def _refuse_unread(kind: KindRuntime, req: Message) -> None:
    """A list filtering by a field no filter reads would answer every object as if filtered."""
    for field, _ in req.ListFields():
        if field.name in kind.unread_list_fields:
            filters = ", ".join(f.field.path for f in kind.list_filters) or "none"
            raise errors.InvalidArgument.field(
                field.name,
                f"this server lists {kind.label} objects by no such filter (no list filter of its plugin "
                f"{kind.plugin!r} reads the field; its filters: {filters})",
            )


def _in_org(org: str) -> Callable[[Message], bool]:
    return lambda o: o.metadata.org == org  # type: ignore[attr-defined]


def _in_any(orgs: tuple[str, ...]) -> Callable[[Message], bool]:
    wanted = frozenset(orgs)
    return lambda o: o.metadata.org in wanted  # type: ignore[attr-defined]


def _held_in(ctx: RequestContext, scan: _Range, orgs: tuple[str, ...]) -> bool:
    """Whether the entries of an index value without an org (a parent's id) are in one of ``orgs``,
    told by the first: a parent's children share its org. Without this look, another org's parent
    with more children than ``max_list_skipped`` answered an empty page with a token (a value that
    names nothing: none), telling that it exists, and the token carried the ids of the children
    it had read past."""
    entries = ctx.store.txn.scan(scan.prefix, first=1)  # the first entry tells, most often
    try:
        for read, (key, _) in enumerate(entries):
            if read >= ctx.registry.limits.max_list_skipped:
                return True  # the page's own reading, as bounded, checks each
            raw = ctx.store.txn.get(keys.object_key(ctx.kind.key_prefix, key[len(scan.prefix) :].decode()))
            if raw is None:  # an entry of a value holding the separator, read past (``_page``)
                continue
            return ctx.kind.parse(raw).metadata.org in orgs  # type: ignore[attr-defined]
        return True  # nothing under it: an empty page either way
    finally:
        close = getattr(entries, "close", None)
        if close is not None:
            close()


@attrs.frozen
class ListByStep(BlanksAnswer):
    """The step ``list_by`` makes, carrying what it reads so the registry can check it at startup
    (an unknown index, or a request field that is missing or neither a string nor an enum, would
    otherwise answer every call INTERNAL)."""

    index: str = ""
    fields: tuple[str, ...] = ()


def list_by(index: str, *fields: str) -> Step:
    """A step for a ``listBy…`` rpc: page through one declared index.

    ``fields`` name the request fields whose values make the index value (for
    an org-scoped index the request's ``org`` comes first, empty for all
    orgs); one named ``…_id`` must hold an id, since a slug there would
    answer an empty page. An enum field gives its value name (``STDIO``), as list filters
    do, so an index declares enum values by name. The request needs
    ``page_size`` and ``page_token``; the response is the kind's list message.
    """
    paths: dict[Any, tuple[FieldPath, ...]] = {}  # per request type, resolved on its first request

    def run(ctx: RequestContext) -> None:
        req: Any = ctx.request
        spec = next((i for i in ctx.kind.indexes if i.name == index), None)
        if spec is None:  # pragma: no cover - the registry refuses an unknown index at startup
            raise RuntimeError(f"{ctx.kind.name} declares no index {index!r}")
        resolved = paths.get(req.DESCRIPTOR)
        if resolved is None:
            resolved = paths[req.DESCRIPTOR] = tuple(FieldPath.resolve(req.DESCRIPTOR, f) for f in fields)
        value = []
        for field, path in zip(fields, resolved, strict=True):
            read = path.read(req)
            if not read:
                raise errors.InvalidArgument.field(field, "is required")
            if field.endswith("_id") and not looks_like_id(read[0]):  # a slug here named nothing: an empty page
                raise errors.InvalidArgument.field(
                    field,
                    f"'{read[0]}' is not an id (<prefix>-<26-character ULID>); this field takes the id, not a "
                    "slug: getByReference finds the id of a slug",
                )
            value.append(read[0])
        orgs = _orgs_listed(ctx, getattr(req, "org", "")) if spec.org_scoped else ("",)
        if not orgs:
            ctx.response = ctx.kind.list_cls()
            return

        def page_range(in_org: str) -> tuple[_Range, Callable[[Message], bool] | None]:
            if spec.org_scoped:
                return _Range(keys.index_prefix(ctx.kind.key_prefix, index, (in_org, *value))), None
            # One parent's entries (a session's executions): one org's, checked as they are read.
            scan = _Range(keys.index_prefix(ctx.kind.key_prefix, index, tuple(value)))
            return scan, None if ctx.caller.unrestricted else _in_any(ctx.caller.orgs)

        if not spec.org_scoped and not ctx.caller.unrestricted and not _held_in(ctx, page_range("")[0], ctx.caller.orgs):
            ctx.response = ctx.kind.list_cls()  # as for a value that names nothing: no page token, no count
            return
        ctx.response = _bound_page(ctx, orgs, page_range)

    return ListByStep(f"list_by_{index}", Phase.LOAD, run, index, fields)


@step(Phase.LOAD)
def dispatch_apply(ctx: RequestContext) -> None:
    """Apply: create when org + slug (or id) is free, else update.

    An apply carrying a ``resource_version`` names a version of an object that must still be
    stored: when none is, the object was deleted after it was read, and creating it again would
    undo that delete (the guarded read-modify-write answered OK over it). It is refused NOT_FOUND;
    an apply without the version creates it again.
    """
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    if not meta.slug and not meta.id:
        meta.slug = slugify(meta.name)
    if meta.id:
        exists = ctx.store.get(ctx.kind, meta.id) is not None
        if not exists and ctx.store.hidden(ctx.kind, meta.id):
            raise taken_elsewhere(ctx.kind, meta.id, ctx.org)
    else:
        exists = ctx.store.id_for_slug(ctx.kind, ctx.org, meta.slug) is not None
    given = _version_given(ctx, meta)
    if given and not exists:
        raise _gone(ctx, meta, given, "apply it without metadata.resource_version to create it again")
    operation = "update" if exists else "create"
    ctx.operation = operation
    pipeline = ctx.kind.pipelines[operation]
    run_steps(pipeline.txn, pipeline.run_txn, ctx, pipeline.txn_plugins)
    ctx.operation = "apply"
