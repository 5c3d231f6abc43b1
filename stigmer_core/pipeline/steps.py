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
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.ids import slugify
from stigmer_core.kinds.declaration import IndexSpec
from stigmer_core.kinds.runtime import LABEL_INDEX, FieldPath
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep, Step, step
from stigmer_core.store import keys

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_BYTES = 3 << 20  # below gRPC's 4 MiB default message limit


def _input(ctx: RequestContext) -> Message:
    found = ctx.kind.resource_in(ctx.request)
    if found is None:  # pragma: no cover - the registry only binds methods that carry one
        raise errors.InvalidArgument.field("resource", "the request carries no resource")
    return found


def _org(ctx: RequestContext, org: str) -> str:
    return org or ctx.registry.default_org


@step(Phase.VALIDATE)
def validate(ctx: RequestContext) -> None:
    """Declared field rules (protovalidate) of the whole request."""
    validation.check(ctx.request)


@step(Phase.AUTHORIZE)
def authorize(ctx: RequestContext) -> None:
    """The authorization seam: local mode lets every caller act as ``local``.

    Authorization plugins add their own steps at ``Phase.AUTHORIZE`` through
    ``stigmer_pipeline_steps``; they see the caller's metadata in ``ctx``.
    """
    ctx.principal = ctx.principal or "local"


@step(Phase.LOAD)
def resolve_slug(ctx: RequestContext) -> None:
    """Default the org, and derive the slug from the name when none is given."""
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    if not meta.slug:
        meta.slug = slugify(meta.name)
        if not meta.slug:
            raise errors.InvalidArgument.field(
                "metadata.name", "needs at least one letter or digit to derive a slug from (or give metadata.slug)"
            )


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


@step(Phase.PERSIST)
def persist_new(ctx: RequestContext) -> None:
    assert ctx.resource is not None
    ctx.store.insert(ctx.kind, ctx.resource)


@step(Phase.LOAD)
def load_existing(ctx: RequestContext) -> None:
    """The object an update acts on: by ``metadata.id``, else by org + slug."""
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    if meta.id:
        existing = ctx.store.require(ctx.kind, meta.id)
        stored = existing.metadata  # type: ignore[attr-defined]
        if meta.org and meta.org != stored.org:
            raise errors.InvalidArgument.field("metadata.org", f"is immutable (stored: '{stored.org}')")
        if meta.slug and meta.slug != stored.slug:
            raise errors.InvalidArgument.field("metadata.slug", f"is immutable (stored: '{stored.slug}')")
    elif meta.slug:
        existing = ctx.store.require_slug(ctx.kind, ctx.org, meta.slug)
    else:
        raise errors.InvalidArgument.field("metadata.id", "an update needs metadata.id or metadata.slug")
    ctx.existing = existing


@step(Phase.CHECK)
def check_version(ctx: RequestContext) -> None:
    """Optimistic concurrency: a non-zero resource_version must be current."""
    if not ctx.kind.shape.has_resource_version:
        return
    given = _input(ctx).metadata.resource_version  # type: ignore[attr-defined]
    stored = ctx.existing.metadata.resource_version  # type: ignore[union-attr]
    if given and given != stored:
        raise errors.Conflict(
            f"{ctx.kind.label} '{ctx.existing.metadata.slug}' was modified: "  # type: ignore[union-attr]
            f"resource_version {given} is stale (current: {stored}); re-read and retry"
        )


@step(Phase.BUILD)
def build_update_state(ctx: RequestContext) -> None:
    """Spec and mutable metadata from the request; the rest as stored."""
    assert ctx.existing is not None
    given = _input(ctx)
    new = ctx.kind.resource_cls()
    new.CopyFrom(ctx.existing)
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


@step(Phase.LOAD)
def load_by_reference(ctx: RequestContext) -> None:
    """Resolve a reference: by id, else by org + slug. An empty kind means this kind."""
    ref = ctx.request
    other = _other_kind(ctx, ref.kind) if ref.kind else None  # type: ignore[attr-defined]
    if other is not None:
        raise errors.InvalidArgument.field(
            "kind", f"'{other}' is not {ctx.kind.name}; send the reference to that kind's service"
        )
    if ref.id:  # type: ignore[attr-defined]
        found = ctx.store.require(ctx.kind, ref.id)  # type: ignore[attr-defined]
        if ref.org and found.metadata.org != ref.org:  # type: ignore[attr-defined]
            raise errors.NotFound(f"{ctx.kind.label} '{ref.id}' not found in org '{ref.org}'")  # type: ignore[attr-defined]
    elif ref.slug:  # type: ignore[attr-defined]
        found = ctx.store.require_slug(ctx.kind, _org(ctx, ref.org), ref.slug)  # type: ignore[attr-defined]
    else:
        raise errors.InvalidArgument.field("slug", "a reference needs a slug or an id")
    ctx.existing = ctx.resource = found


@step(Phase.PERSIST)
def delete(ctx: RequestContext) -> None:
    """Delete the loaded object and everything it owns."""
    assert ctx.existing is not None
    ctx.store.remove(ctx.kind, ctx.existing)


@step(Phase.PUBLISH)
def publish(ctx: RequestContext) -> None:
    """Append this transaction's events to the event log."""
    ctx.store.publish()


@step(Phase.REDACT)
def redact(ctx: RequestContext) -> None:
    """Blank what a kind declares secret before anything leaves the server."""
    if ctx.kind.redact is not None and ctx.resource is not None:
        shown = ctx.kind.resource_cls()
        shown.CopyFrom(ctx.resource)
        ctx.kind.redact(shown)
        ctx.resource = shown


@step(Phase.RESPOND)
def respond(ctx: RequestContext) -> None:
    if ctx.response is None:
        ctx.response = ctx.resource


def _decode_token(token: str, prefix: bytes) -> bytes:
    if not token:
        return b""
    try:
        after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        after = b""
    if not after.startswith(prefix):
        raise errors.InvalidArgument.field("page_token", "is not a token this query returned")
    return after


class _Range:
    """One key range a list reads, and how its keys lead to objects."""

    __slots__ = ("by_object", "by_slug", "prefix")

    def __init__(self, prefix: bytes, *, by_object: bool = False, by_slug: bool = False) -> None:
        self.prefix = prefix
        self.by_object = by_object
        self.by_slug = by_slug


def _page(
    ctx: RequestContext, scan: _Range, keep: Callable[[Message], bool] | None, size: int, token: str
) -> Message:
    """Read one page of ``scan``: at most ``size`` objects (and ~3 MiB) that ``keep`` accepts.

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
    count = 0
    budget = MAX_PAGE_BYTES
    last = b""
    more = False
    for key, value in txn.scan(prefix, after=_decode_token(token, prefix)):
        if count >= size or budget <= 0:
            more = True
            break
        last = key
        if not scan.by_object:
            object_id = value.decode() if scan.by_slug else key[len(prefix) :].decode()
            raw = txn.get(keys.object_key(kind.key_prefix, object_id))
            if raw is None:  # pragma: no cover - indexes change with their object
                continue
            value = raw
        budget -= len(value)
        count += 1
        if raw_page:
            wire += (kind.entries_tag, keys.varint(len(value)), value)
            continue
        obj = kind.parse(value)
        if keep is not None and not keep(obj):
            budget += len(value)
            count -= 1
            continue
        if kind.redact is not None:
            kind.redact(obj)
        entries.append(obj)
    page = kind.list_cls()
    if raw_page:
        page.MergeFromString(b"".join(wire))
    else:
        page.entries.extend(entries)  # type: ignore[attr-defined]
    if more:
        page.next_page_token = base64.urlsafe_b64encode(last).rstrip(b"=").decode()  # type: ignore[attr-defined]
    return page


def _has_index_values(index: IndexSpec, wanted: list[tuple[str, ...]]) -> Callable[[Message], bool]:
    def check(obj: Message) -> bool:
        present = set(index.values(obj))
        return all(w in present for w in wanted)

    return check


@step(Phase.LOAD)
def list_page(ctx: RequestContext) -> None:
    """One page, read from the narrowest key range that answers the request:
    a declared index when a filter field is set, a label index when labels
    are, the org's slug index when only the org is, else the kind's object
    range. Other conditions are checked on the objects of that range."""
    req: Any = ctx.request
    kind = ctx.kind
    org = req.org if kind.list_shape.has_org else ""
    labels = dict(req.labels) if kind.list_shape.has_labels else {}
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
        label_key, label_value = min(labels.items())
        scan = _Range(keys.index_prefix(kind.key_prefix, LABEL_INDEX, (org, label_key, label_value)))
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
        conditions.append(_has_index_values(list_filter.index, [(v,) for v in wanted]))
    keep = (lambda o: all(c(o) for c in conditions)) if conditions else None
    ctx.response = _page(ctx, scan, keep, req.page_size or DEFAULT_PAGE_SIZE, req.page_token)


def list_by(index: str, *fields: str) -> Step:
    """A step for a ``listBy…`` rpc: page through one declared index.

    ``fields`` name the request fields whose values make the index value (for
    an org-scoped index the request's ``org`` comes first, empty for all
    orgs). An enum field gives its value name (``STDIO``), as list filters
    do, so an index declares enum values by name. The request needs
    ``page_size`` and ``page_token``; the response is the kind's list message.
    """
    paths: dict[Any, tuple[FieldPath, ...]] = {}  # per request type, resolved on its first request

    def run(ctx: RequestContext) -> None:
        req: Any = ctx.request
        spec = next((i for i in ctx.kind.indexes if i.name == index), None)
        if spec is None:  # pragma: no cover - a declaration error, caught by the kind's own tests
            raise RuntimeError(f"{ctx.kind.name} declares no index {index!r}")
        resolved = paths.get(req.DESCRIPTOR)
        if resolved is None:
            resolved = paths[req.DESCRIPTOR] = tuple(FieldPath.resolve(req.DESCRIPTOR, f) for f in fields)
        value = []
        for field, path in zip(fields, resolved, strict=True):
            read = path.read(req)
            if not read:
                raise errors.InvalidArgument.field(field, "is required")
            value.append(read[0])
        scope = (getattr(req, "org", ""),) if spec.org_scoped else ()
        scan = _Range(keys.index_prefix(ctx.kind.key_prefix, index, (*scope, *value)))
        ctx.response = _page(ctx, scan, None, req.page_size or DEFAULT_PAGE_SIZE, req.page_token)

    return FunctionStep(f"list_by_{index}", Phase.LOAD, run)


@step(Phase.LOAD)
def dispatch_apply(ctx: RequestContext) -> None:
    """Apply: create when org + slug (or id) is free, else update."""
    meta = _input(ctx).metadata  # type: ignore[attr-defined]
    ctx.org = _org(ctx, meta.org)
    if not meta.slug and not meta.id:
        meta.slug = slugify(meta.name)
    if meta.id:
        exists = ctx.store.get(ctx.kind, meta.id) is not None
    else:
        exists = ctx.store.id_for_slug(ctx.kind, ctx.org, meta.slug) is not None
    operation = "update" if exists else "create"
    ctx.operation = operation
    for inner in ctx.kind.pipelines[operation].run_txn:
        inner(ctx)
    ctx.operation = "apply"
