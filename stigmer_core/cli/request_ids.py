"""Slugs given for the id fields of a ``stigmer call`` request: resolved, or refused by name.

A request field that holds an id (``agentId`` of ``session listByAgent``,
``skillId`` of ``skill listVersions``, ``value`` of a ``get``) is matched by
id on the server: a slug there names nothing, and a list by it comes back
empty, which reads as "there is none". So a value that is not an id is
looked up as a slug of the kind the field names, in the request's org, and
replaced by its id; one that names nothing is an error naming the field. A
field whose kind cannot be told from its name (an execution context's
``executionId``, of either execution kind) takes an id only, and says so.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.cli.calls import check_name
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.envelope import repeated
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.session import Session
from stigmer_core.ids import looks_like_id


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _id_fields(message: Message) -> list[Any]:
    """Top-level singular string fields that hold an id: ``<kind>_id``, ``execution_id``, ``id``, ``value``.

    A message with a ``slug`` field (a reference) names its object by slug already.
    """
    fields = message.DESCRIPTOR.fields_by_name
    if "slug" in fields:
        return []
    return [
        f
        for f in message.DESCRIPTOR.fields
        if f.type == FieldDescriptor.TYPE_STRING
        and not repeated(f)
        and (f.name.endswith("_id") or f.name in ("id", "value"))
    ]


def _target(session: Session, kind: KindInfo, message: Message, field: Any) -> KindInfo | None:
    """The kind whose id the field holds, when its name or its message's name says so."""
    if field.name == "value":
        named = re.fullmatch(r"(\w+)Id", message.DESCRIPTOR.name)
        return session.catalog.by_name(named.group(1)) if named else None
    if field.name == "id" or (field.name == "execution_id" and kind.name.endswith("Execution")):
        return kind
    return session.catalog.by_name(_camel(field.name[: -len("_id")]))


def resolve(session: Session, kind: KindInfo, request: Message) -> None:
    """Replace a slug given for an id field of ``request`` (an rpc of ``kind``) with the id, in place."""
    org_field = request.DESCRIPTOR.fields_by_name.get("org")
    org = getattr(request, "org", "") if org_field is not None else ""
    org = org or session.org
    for field in _id_fields(request):
        value: Any = getattr(request, field.name)
        if not value or looks_like_id(value):
            continue
        target = _target(session, kind, request, field)
        if target is None:
            raise CliError(
                f"request field {field.json_name}: '{value}' is not an id; the field takes an id, "
                "not a slug: give the id (`stigmer get KIND NAME` shows it)"
            )
        try:
            check_name(target, value)
        except CliError as exc:  # neither a slug nor an id: said of the field it was given in
            raise CliError(f"request field {field.json_name}: {exc.message}", exit_code=exc.exit_code) from None
        found = session.calls(target).lookup(org, value)
        if found is None:
            raise CliError(f"request field {field.json_name}: {target.label} '{value}' not found in org '{org}'")
        setattr(request, field.name, found.metadata.id)  # type: ignore[attr-defined]
