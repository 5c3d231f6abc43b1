"""What ``export`` writes, chosen so that export -> empty store -> import -> export
gives the same bytes.

Left out, because the server owns them and import cannot restore them:

- ``status`` (computed by the server; create starts it afresh),
- ``metadata.resourceVersion``, ``metadata.createdAt``, ``metadata.updatedAt``
  (stamped by the server on every write).

Kept: ``apiVersion``, ``kind``, the rest of ``metadata`` (``id``, ``slug``,
``org``, ``name``, ``labels``, ``tags``, ``annotations``,
``ownerReferences``) and ``spec``, so import restores ids and slugs.

One exception: an object the server creates *for* another one (an owned
object whose id its owner's status records, like an agent's default
instance) is written without its id. Importing the owner creates it again
under a new id the client cannot choose; the document, keyed by org and
slug, then updates that object with the exported spec.

Documents are sorted by kind (apply order, then name), org and slug, and
dumped with sorted keys, so the output depends only on the objects.
Secrets are whatever the server returns: kinds that declare secrets redact
them on every read, so they are never written in clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.cli import yamlio
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.documents import to_dict
from stigmer_core.cli.envelope import metadata, object_id
from stigmer_core.cli.progress import Progress
from stigmer_core.cli.session import Session

SERVER_OWNED_METADATA = ("resourceVersion", "createdAt", "updatedAt")


def collect(session: Session, kinds: Sequence[KindInfo], *, org: str) -> list[tuple[KindInfo, Message]]:
    """Every object of ``kinds`` in ``org`` ("" for every org), with a progress bar on a terminal."""
    found: list[tuple[KindInfo, Message]] = []
    with Progress("exporting") as progress:
        for kind in kinds:
            progress.describe(f"exporting {kind.plural}")
            for obj in session.calls(kind).iterate(org=org):
                found.append((kind, obj))
                progress.advance()
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def derived_ids(session: Session, objects: Iterable[tuple[KindInfo, Message]]) -> set[str]:
    """Ids of owned objects whose owner's status names them: the server made them."""
    listed = list(objects)
    by_id: dict[str, Message] = {object_id(obj): obj for _, obj in listed}
    status_strings: dict[str, set[str]] = {}
    derived = set()
    for _, obj in listed:
        meta = metadata(obj)
        for ref in getattr(meta, "owner_references", ()):
            if ref.id not in status_strings:
                owner = by_id.get(ref.id) or _fetch(session, ref.kind, ref.id)
                status_strings[ref.id] = set(_strings(to_dict(owner).get("status"))) if owner is not None else set()
            if meta.id in status_strings[ref.id]:
                derived.add(meta.id)
    return derived


def _fetch(session: Session, kind_name: str, object_id: str) -> Message | None:
    kind = session.catalog.by_name(kind_name)
    if kind is None:
        return None
    calls = session.calls(kind)
    try:
        found: Message = calls.call("get", calls.request("get", value=object_id))
    except errors.NotFound:
        return None
    return found


def document(obj: Message, *, keep_id: bool) -> dict[str, Any]:
    data = to_dict(obj)
    data.pop("status", None)
    meta = data.get("metadata", {})
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    if not keep_id:
        meta.pop("id", None)
    return data


def export_text(objects: Sequence[tuple[KindInfo, Message]], derived: set[str]) -> str:
    def key(item: tuple[KindInfo, Message]) -> tuple[int, str, str, str]:
        kind, obj = item
        meta = metadata(obj)
        return (kind.rank, kind.name, meta.org, meta.slug)

    docs = [document(obj, keep_id=object_id(obj) not in derived) for _, obj in sorted(objects, key=key)]
    return yamlio.dump_all(docs) if docs else ""
