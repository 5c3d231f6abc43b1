"""Drawn references, kept in their object's org and naming their field's kind as the server
requires (``stigmer_plugins.references.keep_refs_in_org``): the rules are a kind's, not field
rules the strategies could read. A reference names something (a slug, else one is given), an
id is one of its kind's (else it is dropped), and one giving both would have to name one object
(the drawn id is dropped, since it names nothing stored). Only a skill keeps versions: an
environment reference names none."""

from __future__ import annotations

from typing import Any

from stigmer_core.ids import is_valid_id

_KINDS = {"environment_refs": "Environment", "skill_refs": "Skill"}
_ID_PREFIXES = {"Environment": "env", "Skill": "skl"}


def keep_in_org(resource: Any, org: str) -> None:
    for field, kind in _KINDS.items():
        if field not in resource.spec.DESCRIPTOR.fields_by_name:
            continue
        for ref in getattr(resource.spec, field):
            if ref.org and ref.org != org:
                ref.org = org
            if ref.kind and ref.kind.lower() != kind.lower():
                ref.kind = kind
            if ref.id and (ref.slug or not is_valid_id(ref.id, _ID_PREFIXES[kind])):
                ref.ClearField("id")
            if not ref.id and not ref.slug:
                ref.slug = "drawn"
            if kind == "Environment":
                ref.ClearField("version")
