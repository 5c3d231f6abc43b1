"""The standard rpcs of any kind, invoked by path with the kind's message classes.

Nothing here names a message type: requests are built from field names the
resource conventions fix (``value`` of an id, ``org``/``slug``/``id`` of a
reference, ``org``/``page_size``/``page_token``/``labels`` of a list), so a
kind the CLI has never heard of works the moment its plugin is installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.envelope import descriptor, metadata
from stigmer_core.cli.errors import CliError, from_rpc, status_line, violation_lines
from stigmer_core.headers import DRY_RUN, DRY_RUN_CREATED, REMOVED, REMOVED_COUNT
from stigmer_core.ids import looks_like_id, slugify

# ``<id_prefix>-<lowercase ULID>``: anything else given as NAME|ID is a slug.
MAX_PAGE = 1000
DEFAULT_TIMEOUT = 30.0


def wrap(request_cls: type[Message], resource: Message) -> Message:
    """A write request carrying ``resource``: the resource itself, or a wrapper with one field of its type."""
    wanted = descriptor(resource).full_name
    if descriptor(request_cls).full_name == wanted:
        if type(resource) is request_cls:
            return resource
        return request_cls.FromString(resource.SerializeToString())
    fields = [
        f for f in descriptor(request_cls).fields if f.message_type is not None and f.message_type.full_name == wanted
    ]
    if len(fields) != 1:
        raise CliError(f"cannot tell which field of {descriptor(request_cls).full_name} carries the resource")
    request = request_cls()
    getattr(request, fields[0].name).MergeFromString(resource.SerializeToString())
    return request


def check_name(kind: KindInfo, name: str) -> None:
    """A NAME that is neither an id nor a slug, refused here in words (the server's refusal named
    only a regex of ``ApiResourceReference.slug``): a display name (`Support Bot`), capitals."""
    if name and slugify(name) == name:
        return
    suggestion = slugify(name)
    hint = f" (its slug may be '{suggestion}')" if suggestion and not name.startswith(f"{kind.id_prefix}-") else ""
    shape = f" ({kind.id_prefix}-…)" if kind.id_prefix else ""
    raise CliError(
        f"'{name}' is neither a slug (lowercase letters, digits and inner dashes) nor an id{shape} of "
        f"{kind.plural}{hint}",
        exit_code=2,
    )


class KindCalls:
    """One kind's standard rpcs over a channel, errors already in the exception tree."""

    def __init__(self, channel: grpc.Channel, kind: KindInfo, *, target: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self.kind = kind
        self.target = target
        self.timeout = timeout
        self._callables: dict[str, Any] = {}
        self.missing: errors.NotFound | None = None
        """The server's refusal of the last object looked for and not found (for ``-v``)."""

    def call(self, method: str, request: Message, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        found = self.kind.method(method)
        callable_ = self._callables.get(method)
        if callable_ is None:
            callable_ = self._callables[method] = self.channel.unary_unary(
                found.path,
                request_serializer=found.request_cls.SerializeToString,
                response_deserializer=found.response_cls.FromString,
            )
        if not isinstance(request, found.request_cls):
            request = found.request_cls.FromString(request.SerializeToString())
        try:
            return callable_(request, timeout=self.timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            raise from_rpc(exc, self.target) from exc

    def request(self, method: str, **fields: Any) -> Message:
        cls = self.kind.method(method).request_cls
        known = descriptor(cls).fields_by_name
        return cls(**{k: v for k, v in fields.items() if k in known})

    def lookup(self, org: str, name_or_id: str) -> Message | None:
        """The object a NAME|ID argument names in ``org``, or None.

        An id is read with the kind's ``get`` (when it has one), a slug with ``getByReference``:
        only ``get`` is the read a server answers in full (a runner's ``get`` of a live
        execution's context carries its secrets in clear; every other read, redacted). An
        object of another org is not the one named in ``org``. An org the server does not know
        for this caller is raised, not None: the object was never looked for, and saying it is
        missing would send its user looking for the wrong thing.
        """
        found = self._find(org, name_or_id)
        return found if found is None or not org or metadata(found).org == org else None

    def _find(self, org: str, name_or_id: str) -> Message | None:
        """What ``lookup`` reads: an id read with ``get`` is answered whatever its org. A NAME
        shaped like an id that names none is looked for as a slug too: a store written before
        the server refused such slugs may hold one, which get listed and nothing could name."""
        by_id = looks_like_id(name_or_id, self.kind.id_prefix)
        try:
            if by_id:
                try:
                    if "get" in self.kind.methods:
                        found: Message = self.call("get", self.request("get", value=name_or_id))
                        return found
                    return self.call("getByReference", self.request("getByReference", org=org, id=name_or_id))  # type: ignore[no-any-return]
                except errors.NotFound as exc:
                    if exc.reason == errors.OrgNotVisible.reason or not org:
                        raise
            ref = self.request("getByReference", org=org, slug=name_or_id)
            found = self.call("getByReference", ref)
        except errors.NotFound as exc:
            if exc.reason == errors.OrgNotVisible.reason:
                raise
            self.missing = exc
            return None
        return found

    def require(self, org: str, name_or_id: str) -> Message:
        """The object, or a refusal; an id of another org's object (ids are unique across orgs)
        says which org holds it, not that nothing was found."""
        self.missing = None
        if not looks_like_id(name_or_id, self.kind.id_prefix):
            check_name(self.kind, name_or_id)
        found = self._find(org, name_or_id)
        if found is None:
            # the server's refusal, for -v: what a script matches on (docs/cli.md, Output and errors)
            said: list[str] = (
                [] if self.missing is None else [*violation_lines(self.missing), status_line(self.missing)]
            )
            raise CliError(f"{self.kind.label} '{name_or_id}' not found in org '{org}'", details=said)
        held = metadata(found).org
        if org and held != org:
            raise CliError(
                f"{self.kind.label} '{name_or_id}' is in org '{held}', not in org '{org}': give --org {held}"
            )
        return found

    def iterate(self, *, org: str = "", labels: Mapping[str, str] | None = None, limit: int = 0) -> Iterator[Message]:
        """Every object, page by page; ``limit`` 0 means all."""
        token = ""
        seen = 0
        while True:
            size = min(MAX_PAGE, limit - seen) if limit else MAX_PAGE
            request: Any = self.request("list", org=org, page_size=size, page_token=token)
            if labels:
                if "labels" not in descriptor(request).fields_by_name:
                    raise CliError(
                        f"{self.kind.plural} cannot be listed by label: the kind's list request has no labels"
                    )
                request.labels.update(labels)
            page = self.call("list", request)
            for entry in page.entries:
                yield entry
                seen += 1
                if limit and seen >= limit:
                    return
            token = page.next_page_token
            if not token:
                return

    def count(self, org: str = "") -> int:
        return sum(1 for _ in self.iterate(org=org))

    def apply(
        self, resource: Message, *, dry_run: bool = False, made: set[tuple[str, str, str]] | None = None
    ) -> Message:
        """Apply ``resource``; with ``dry_run`` the server runs the whole write and answers what
        it would store, storing nothing, and ``made`` gets (kind, org, slug) and (kind, org, id) of
        what else it would have made (``DRY_RUN_CREATED``: an agent's default instance)."""
        request = wrap(self.kind.method("apply").request_cls, resource)
        if not dry_run:
            applied: Message = self.call("apply", request)
            return applied
        found = self.kind.method("apply")
        callable_ = self.channel.unary_unary(
            found.path,
            request_serializer=found.request_cls.SerializeToString,
            response_deserializer=found.response_cls.FromString,
        )
        try:
            answer, call = callable_.with_call(request, timeout=self.timeout, metadata=((DRY_RUN, "true"),))
        except grpc.RpcError as exc:
            raise from_rpc(exc, self.target) from exc
        for key, value in call.trailing_metadata() or ():
            parts = str(value).split(" ")
            if key == DRY_RUN_CREATED and len(parts) == 4 and made is not None:
                kind, object_id, slug, org = parts
                made.update({(kind, org, slug), (kind, org, object_id)})
        return answer  # type: ignore[no-any-return]

    def delete(self, object_id: str) -> Message:
        deleted: Message = self.call("delete", self.request("delete", value=object_id))
        return deleted

    def delete_reporting(
        self, object_id: str, *, dry_run: bool = False
    ) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
        """Delete (or, with ``dry_run``, have the server rehearse deleting) an object; return
        (kind, id, slug) of what went, owners first, as the server names it (the first
        ``REMOVED_LISTED``), and how many objects of each kind went in all."""
        found = self.kind.method("delete")
        callable_ = self.channel.unary_unary(
            found.path,
            request_serializer=found.request_cls.SerializeToString,
            response_deserializer=found.response_cls.FromString,
        )
        metadata = ((DRY_RUN, "true"),) if dry_run else ()
        try:
            _, call = callable_.with_call(
                self.request("delete", value=object_id), timeout=self.timeout, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc(exc, self.target) from exc
        removed = []
        counts: dict[str, int] = {}
        for key, value in call.trailing_metadata() or ():
            if key == REMOVED:
                kind, object_id, slug = str(value).split(" ", 2)
                removed.append((kind, object_id, slug))
            elif key == REMOVED_COUNT:
                for part in str(value).split():
                    kind, _, count = part.partition("=")
                    counts[kind] = int(count)
        if not counts:  # a server that names every object and counts none
            for kind, _, _ in removed:
                counts[kind] = counts.get(kind, 0) + 1
        return removed, counts
