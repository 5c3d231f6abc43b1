"""References by slug in documents: ``agentInstanceId: support-bot-default`` instead of an id.

A field a kind declares as a reference (``Reference`` in its declaration)
holds ids. In a document it may hold the target's slug instead; ``apply``
(and ``import``) look each slug up in the document's org and write the id
the server expects. A slug that names nothing is an error naming the field,
the target kind and the org, before anything is written.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from google.protobuf.message import Message

from stigmer_core.cli.documents import Document, json_path
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.session import Session
from stigmer_core.ids import looks_like_id


def _holder(message: Any, path: str) -> tuple[Any, str] | None:
    *parents, leaf = path.split(".")
    for part in parents:
        if not message.HasField(part):
            return None
        message = getattr(message, part)
    return message, leaf


def _exists(session: Session, kind_name: str, org: str, object_id: str) -> bool:
    target = session.catalog.by_name(kind_name)
    return target is not None and session.calls(target).lookup(org, object_id) is not None


def resolve(
    session: Session,
    doc: Document,
    message: Message,
    planned: Collection[tuple[str, str, str]] = (),
    unresolved: list[str] | None = None,
    taken: list[str] | None = None,
) -> None:
    """Replace slugs in ``message`` (``doc``'s, parsed) reference fields with the ids they name, in place.

    ``planned``: (kind, org, slug or id) of the objects a dry run's other documents would create; a
    slug naming one is left as it is (a real apply creates it first), not refused as not found.
    ``unresolved`` (a dry run's): where any other slug not found is noted, instead of refused,
    since the server may make it before it is needed (an agent's default instance).
    ``taken``: where the slugs taken as found because ``planned`` names them are collected.
    """
    org = metadata(message).org or session.org
    for path, target_name in doc.kind.reference_fields:
        found = _holder(message, path)
        if found is None:
            continue
        holder, leaf = found
        value = getattr(holder, leaf)
        values = [value] if isinstance(value, str) else list(value)
        if all(not v or looks_like_id(v) for v in values):
            if taken is not None:  # an id another document of the run gives its own object, not made yet
                taken.extend(
                    v
                    for v in values
                    if v and (target_name, org, v) in planned and not _exists(session, target_name, org, v)
                )
            continue
        target = session.catalog.by_name(target_name)
        if target is None:
            raise CliError(f"{json_path(doc.kind.resource_cls, path)}: kind {target_name} is not served here")
        calls = session.calls(target)
        resolved = []
        for slug in values:
            if not slug or looks_like_id(slug, target.id_prefix):
                resolved.append(slug)
                continue
            obj = calls.lookup(org, slug)
            if obj is None and (target.name, org, slug) in planned:
                if taken is not None:
                    taken.append(slug)
                resolved.append(slug)
                continue
            if obj is None:
                missing = f"{json_path(doc.kind.resource_cls, path)}: {target.label} '{slug}' not found in org '{org}'"
                if unresolved is None:
                    raise CliError(missing)
                unresolved.append(missing)
                resolved.append(slug)
                continue
            resolved.append(metadata(obj).id)
        if isinstance(value, str):
            setattr(holder, leaf, resolved[0])
        else:
            del value[:]
            value.extend(resolved)
