"""What ``export`` writes, chosen so that export -> empty store -> import -> export
gives the same bytes.

Kinds whose declaration says ``exported=False`` (run-time records such as
executions) are not written: importing them could not make them again as
they were, and they are not configuration.

Left out of every document, because the server owns them and import cannot
restore them:

- ``status`` (computed by the server; create starts it afresh),
- ``metadata.resourceVersion``, ``metadata.createdAt``, ``metadata.updatedAt``
  (stamped by the server on every write),
- ``metadata.version`` (a versioned kind's content version: the server
  derives it from the content on every write, and the version it replaced
  is history an import does not bring back).

Kept: ``apiVersion``, ``kind``, the rest of ``metadata`` (``id``, ``slug``,
``org``, ``name``, ``labels``, ``tags``, ``annotations``,
``ownerReferences``) and ``spec``, so import restores ids and slugs. That
holds for objects the server creates for another one too (an agent's
default instance): their ids are derived from the owner's, so importing the
owner under its id makes them again under theirs, and the document then
brings their spec back.

Documents are sorted by kind (in the order import writes them), org and
slug, and dumped with sorted keys, so the output depends only on the
objects. Secrets are whatever the server returns: kinds that declare secrets
redact them on every read, so they are never written in clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from stigmer_core.cli import yamlio
from stigmer_core.cli.catalog import Catalog, KindInfo
from stigmer_core.cli.documents import to_dict
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.progress import Progress
from stigmer_core.cli.session import Session

SERVER_OWNED_METADATA = ("resourceVersion", "createdAt", "updatedAt", "version")


def exportable(catalog: Catalog, names: Sequence[str]) -> list[KindInfo]:
    """The kinds to export: every exported one when ``names`` is empty, else those named.

    Naming a kind that is not exported is an error rather than an empty
    export, so a backup script cannot silently miss what it asked for.
    """
    if not names:
        return [kind for kind in catalog.kinds if kind.exported]
    kinds = list(dict.fromkeys(catalog.kind(name) for name in names))
    for kind in kinds:
        if not kind.exported:
            raise CliError(
                f"kind '{kind.cli_name}' is not exportable (its declaration says exported=False); "
                "`stigmer export --all` leaves it out"
            )
    return kinds


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


def document(obj: Message) -> dict[str, Any]:
    data = to_dict(obj)
    data.pop("status", None)
    meta = data.get("metadata", {})
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    return data


def export_text(objects: Sequence[tuple[KindInfo, Message]], order: Mapping[str, int]) -> str:
    """``objects`` as YAML documents; ``order`` places kinds (``Catalog.write_order``)."""

    def key(item: tuple[KindInfo, Message]) -> tuple[int, str, str, str]:
        kind, obj = item
        meta = metadata(obj)
        return (order[kind.name], kind.name, meta.org, meta.slug)

    docs = [document(obj) for _, obj in sorted(objects, key=key)]
    return yamlio.dump_all(docs) if docs else ""
