"""Drawn references, kept in their object's org and naming their field's kind as the server
requires (``stigmer_plugins.references.keep_refs_in_org``): the rule is a kind's, not a field
rule the strategies could read."""

from __future__ import annotations

from typing import Any

_KINDS = {"environment_refs": "Environment", "skill_refs": "Skill"}


def keep_in_org(resource: Any, org: str) -> None:
    for field, kind in _KINDS.items():
        if field not in resource.spec.DESCRIPTOR.fields_by_name:
            continue
        for ref in getattr(resource.spec, field):
            if ref.org and ref.org != org:
                ref.org = org
            if ref.kind and ref.kind.lower() != kind.lower():
                ref.kind = kind
