"""Content versions for any kind, turned on by declaration.

A kind says what its content is (``content``: the bytes whose SHA-256 names
a version) and, optionally, which tag a write gives it (``tag``).
``Versioning.steps()`` are then added to the kind's standard operations:

- create/update (and so apply): a write whose content hash differs from the
  current one makes a new version; ``metadata.version`` names it (``id`` is
  the hash, ``previous_version_id`` the version it replaced, ``tag`` the tag
  it was written under). A write with the current content makes none, and
  one that changes nothing at all writes nothing (same resource_version).
- getByReference: ``version`` of the reference picks a version: empty or
  ``latest`` for the current one, a tag, or a 64-hex hash.
- delete: every version, tag and blob of the object goes with it (the store
  clears an object's version range whenever it deletes the object, so a
  cascade from an owner clears it too).

``list_versions(id_field)`` is a step for a query rpc that pages through one
object's versions, oldest first, ``list_tags(id_field, response)`` one that
pages through its tags, and ``put_blob``/``get_blob`` keep large
payloads (an artifact) content-addressed beside the versions that name them.

Everything is written in the request's own transaction, under the key
family ``ver/`` (see ``stigmer_core.store.keys``), through ``Resources.keep``
so that its bytes count in the object's org's usage (``kinds/usage.py``), per object::

    ver/<key_prefix>/<object_id>/h/<hash>          the object as it last was with that content
    ver/<key_prefix>/<object_id>/n/<revision:8>    hash of the version first made at that revision
    ver/<key_prefix>/<object_id>/t/<tag>           hash the tag names now
    ver/<key_prefix>/<object_id>/b/<sha256>        a blob, by the SHA-256 of its bytes
    ver/<key_prefix>/<object_id>/c                 how many versions it keeps (max_versions_per_object)

Listing versions scans one object's ``n/`` range; resolving a tag or a hash
is one key read; deleting an object clears one object's range. None of it
reads another object's keys, let alone the whole kind.

"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import attrs
from google.protobuf.message import Message

from stigmer_core import InvalidArgument, NotFound, Phase, RequestContext, ResourceExhausted, Step
from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.limits import ENV
from stigmer_core.pipeline.step import FunctionStep
from stigmer_core.pipeline.steps import ENTRY_OVERHEAD, RESOLVE_VERSION, TOKEN_ROOM, page_tokens
from stigmer_core.store import keys
from stigmer_core.store.protocol import ReadTxn, WriteTxn

LATEST = "latest"
DEFAULT_PAGE_SIZE = 100
HASH = re.compile(r"^[0-9a-f]{64}$")
_SCRATCH = "versioning.write"


def frame(*parts: bytes) -> bytes:
    """Length-prefixed parts, so two different tuples never make the same bytes."""
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def object_range(key_prefix: str, object_id: str) -> bytes:
    return keys.version_prefix(key_prefix, object_id)


def _hash_key(base: bytes, digest: str) -> bytes:
    return base + b"h/" + digest.encode()


def _tag_key(base: bytes, tag: str) -> bytes:
    return base + b"t/" + tag.encode()


def _blob_key(base: bytes, digest: str) -> bytes:
    return base + b"b/" + digest.encode()


def _count_key(base: bytes) -> bytes:
    """How many versions the object keeps (8 bytes): checking the limit reads one key, not the
    object's ``n/`` range."""
    return base + b"c"


def _versions_made(ctx: RequestContext, base: bytes, meta: Any) -> int:
    """The count of the object's versions with the one being made, refused past
    ``Limits.max_versions_per_object``. An object versioned before the count was kept has its
    ``n/`` range counted once, by its first new version."""
    txn = ctx.store.txn
    raw = txn.get(_count_key(base))
    held = int.from_bytes(raw, "big") if raw is not None else sum(1 for _ in txn.scan(base + b"n/"))
    limit = ctx.registry.limits.max_versions_per_object
    if held >= limit:
        raise ResourceExhausted(
            f"{ctx.kind.label} '{meta.slug}' keeps {held:,} versions, and {limit:,} is the most one object may "
            f"keep (max_versions_per_object, {ENV['max_versions_per_object']}): this content would make another; "
            "a write returning to one of its versions' content still goes through; keep this content under a "
            "new name, or have the server's operator raise the limit",
            reason="VERSION_LIMIT",
            metadata={"kind": ctx.kind.name, "id": meta.id, "limit": limit, "setting": ENV["max_versions_per_object"]},
        )
    return held + 1


def _no_tag(_: Message) -> str:
    return ""


def _meta(obj: Message) -> Any:
    return obj.metadata  # type: ignore[attr-defined]


def _writer(ctx: RequestContext) -> WriteTxn:
    return cast(WriteTxn, ctx.store.txn)


@attrs.frozen
class _Write:
    """What the stamping step decided, for the recording step of the same run."""

    digest: str
    new_version: bool
    tag: str


@attrs.frozen
class Versioning:
    """The declaration of a versioned kind's content; see the module docstring."""

    content: Callable[[Message], bytes]
    """The bytes a version is the SHA-256 of (``frame`` joins several parts)."""
    tag: Callable[[Message], str] = _no_tag
    """The tag a write gives its content ("" or "latest": none)."""
    tag_field: str = "spec.tag"
    """Where the tag comes from, for error messages."""

    # -- declaration -------------------------------------------------------------
    def steps(self) -> dict[str, tuple[Step, ...]]:
        """Steps for the kind's standard operations; put them after the kind's own
        steps that change the content (``merge_steps`` keeps that order)."""
        stamp = FunctionStep("versioning_stamp", Phase.KIND, self._stamp)
        record = FunctionStep("versioning_record", Phase.PERSIST, self._record)
        return {
            "create": (stamp, record),
            "update": (stamp, record),
            "getByReference": (FunctionStep(RESOLVE_VERSION, Phase.LOAD, self._resolve),),
        }

    def list_versions(self, id_field: str) -> Step:
        """A step for a query rpc listing one object's versions, oldest first.

        The request names the object in ``id_field`` and carries
        ``page_size`` and ``page_token``; the response is the kind's list
        message, one entry per version (the object as it last was with that
        content).
        """

        def run(ctx: RequestContext) -> None:
            req, object_id = _named_object(ctx, id_field)
            base = object_range(ctx.kind.key_prefix, object_id)
            ctx.response = _page(ctx, base, req.page_size or DEFAULT_PAGE_SIZE, req.page_token)

        return FunctionStep("list_versions", Phase.LOAD, run)

    def list_tags(self, id_field: str, response: type[Message]) -> Step:
        """A step for a query rpc listing one object's tags, by tag, each with the hash it names.

        A version's entry in ``list_versions`` holds only the tag it was last written under;
        this is where every tag is found (an export carries them). The request is as
        ``list_versions`` takes it; ``response`` has a repeated ``tags`` of messages with
        ``tag`` and ``version_hash``, and ``next_page_token``.
        """

        def run(ctx: RequestContext) -> None:
            req, object_id = _named_object(ctx, id_field)
            ctx.response = _tag_page(ctx, object_id, response, req.page_size or DEFAULT_PAGE_SIZE, req.page_token)

        return FunctionStep("list_tags", Phase.LOAD, run)

    # -- steps -------------------------------------------------------------------
    def _stamp(self, ctx: RequestContext) -> None:
        obj = ctx.resource
        assert obj is not None
        tag = self.tag(obj)
        tag = "" if tag == LATEST else tag
        if HASH.match(tag.lower()):  # a lookup lowers it, and would take it for one
            raise InvalidArgument.field(self.tag_field, "must not look like a version hash (64 hex digits)")
        digest = hashlib.sha256(self.content(obj)).hexdigest()
        version = _meta(obj).version
        current = _meta(ctx.existing).version.id if ctx.existing is not None else ""
        new_version = digest != current
        if new_version:
            version.Clear()
            version.id = digest
            version.previous_version_id = current
            version.tag = tag
        elif tag:
            version.tag = tag
        ctx.scratch[_SCRATCH] = _Write(digest, new_version, tag)

    def _record(self, ctx: RequestContext) -> None:
        write: _Write | None = ctx.scratch.get(_SCRATCH)
        if ctx.unchanged or write is None:
            return
        obj = ctx.resource
        assert obj is not None
        txn = _writer(ctx)
        meta = _meta(obj)
        base = object_range(ctx.kind.key_prefix, meta.id)
        keep = ctx.store.keep  # counted in the org's usage, as the object is (kinds/usage.py)
        if keep(meta.org, _hash_key(base, write.digest), obj.SerializeToString()) is None:
            made = _versions_made(ctx, base, meta)
            keep(meta.org, base + b"n/" + txn.write_revision().to_bytes(8, "big"), write.digest.encode())
            keep(meta.org, _count_key(base), made.to_bytes(8, "big"))
        if write.tag:
            keep(meta.org, _tag_key(base, write.tag), write.digest.encode())

    def _resolve(self, ctx: RequestContext) -> None:
        wanted = str(getattr(ctx.request, "version", "") or "")
        if not wanted or wanted == LATEST or ctx.resource is None:
            return
        ctx.existing = ctx.resource = resolve(ctx.store.txn, ctx.kind, ctx.resource, wanted)


def resolve(txn: ReadTxn, kind: KindRuntime, current: Message, version: str) -> Message:
    """``current`` as it was at ``version`` ("", "latest", a tag or a hash).

    For steps of other kinds too (an agent pinning a skill version): it is a
    key read or two in the caller's transaction.
    """
    if not version or version == LATEST:
        return current
    meta = _meta(current)
    base = object_range(kind.key_prefix, meta.id)
    lowered = version.lower()
    if HASH.match(lowered):
        digest = lowered
    else:
        pointed = txn.get(_tag_key(base, version))
        if pointed is None:
            raise NotFound(
                f"{kind.label} '{meta.slug}' has no version tagged '{version}' (version)",
                metadata=_missing(kind, meta, version),
            )
        digest = pointed.decode()
    if digest == meta.version.id:
        return current
    raw = txn.get(_hash_key(base, digest))
    if raw is None:
        raise NotFound(
            f"{kind.label} '{meta.slug}' has no version '{digest}' (version)", metadata=_missing(kind, meta, digest)
        )
    return kind.parse(raw)


def _missing(kind: KindRuntime, meta: Any, version: str) -> dict[str, str]:
    """What a client matching NOT_FOUND's ErrorInfo reads: the object found, and the version it lacks."""
    return {"kind": kind.name, "id": meta.id, "slug": meta.slug, "org": meta.org, "version": version}


def put_blob(ctx: RequestContext, object_id: str, data: bytes) -> str:
    """Keep ``data`` with ``object_id``'s versions, once per content; return its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    key = _blob_key(object_range(ctx.kind.key_prefix, object_id), digest)
    ctx.store.keep(_org_of(ctx, object_id), key, data, only_new=True)  # counted in the org's usage
    return digest


def _org_of(ctx: RequestContext, object_id: str) -> str:
    """The org of the object a blob is kept with: the request's own object, or the stored one."""
    own = ctx.resource
    if own is not None and _meta(own).id == object_id:
        return str(_meta(own).org)
    return str(_meta(ctx.store.require(ctx.kind, object_id)).org)


def get_blob(txn: ReadTxn, kind: KindRuntime, object_id: str, digest: str) -> bytes | None:
    return txn.get(_blob_key(object_range(kind.key_prefix, object_id), digest))


def merge_steps(*maps: Mapping[str, Sequence[Step]]) -> dict[str, tuple[Step, ...]]:
    """Per-operation steps of several declarations, concatenated in the order given."""
    merged: dict[str, list[Step]] = {}
    for steps in maps:
        for op, found in steps.items():
            merged.setdefault(op, []).extend(found)
    return {op: tuple(found) for op, found in merged.items()}


def _page(ctx: RequestContext, base: bytes, size: int, token: str) -> Message:
    """One page of an object's versions, within ``Limits.max_page_bytes`` as every list page is
    (it ends before the version that would pass it, and holds at least one), with a page token
    sealed to the kind and the request, as a list's is."""
    kind = ctx.kind
    txn = ctx.store.txn
    prefix = base + b"n/"
    tokens = page_tokens(ctx)

    def bound_to() -> bytes:  # only when a token is read or made: most pages need none
        return tokens.fingerprint(ctx.request) + b".versions"

    after = b""
    if token:
        _, inner = tokens.open(kind.name, bound_to(), token)
        after = prefix + bytes.fromhex(inner)  # sealed by this query: its own hex
    entries: list[Message] = []
    budget = ctx.registry.limits.max_page_bytes - TOKEN_ROOM
    last = b""
    more = False
    for key, digest in txn.scan(prefix, after=after, first=size + 1):
        if len(entries) >= size:
            more = True
            break
        raw = txn.get(_hash_key(base, digest.decode()))
        if raw is None:  # pragma: no cover - both keys are written together
            continue
        cost = len(raw) + ENTRY_OVERHEAD
        if entries and cost > budget:
            more = True
            break
        budget -= cost
        last = key
        obj = kind.parse(raw)
        if kind.redact is not None:
            kind.redact(obj)
        entries.append(obj)
    page: Any = kind.list_cls()
    page.entries.extend(entries)
    if more:
        page.next_page_token = tokens.seal(kind.name, bound_to(), "", last[len(prefix) :].hex())
    return cast(Message, page)


def _tag_page(ctx: RequestContext, object_id: str, response: type[Message], size: int, token: str) -> Message:
    """One page of an object's tags (small entries: a page of ``size`` stays far below a message's limit),
    with a page token sealed as a list's is."""
    kind = ctx.kind
    prefix = object_range(kind.key_prefix, object_id) + b"t/"
    tokens = page_tokens(ctx)
    bound_to = tokens.fingerprint(ctx.request) + b".tags"
    after = prefix + bytes.fromhex(tokens.open(kind.name, bound_to, token)[1]) if token else b""
    page: Any = response()
    last = b""
    for key, digest in ctx.store.txn.scan(prefix, after=after, first=size + 1):
        if len(page.tags) >= size:
            page.next_page_token = tokens.seal(kind.name, bound_to, "", last[len(prefix) :].hex())
            break
        page.tags.add(tag=key[len(prefix) :].decode(), version_hash=digest.decode())
        last = key
    return cast(Message, page)


def versions_of(txn: ReadTxn, kind: KindRuntime, object_id: str) -> Iterable[str]:
    """Hashes of one object's versions, oldest first."""
    prefix = object_range(kind.key_prefix, object_id) + b"n/"
    for _, digest in txn.scan(prefix):
        yield digest.decode()


def _named_object(ctx: RequestContext, id_field: str) -> tuple[Any, str]:
    """The request and the id its ``id_field`` names, once the object is found (NOT_FOUND else)."""
    req: Any = ctx.request
    object_id = str(getattr(req, id_field))
    ctx.store.require_id(ctx.kind, object_id, id_field)
    return req, object_id
