"""References an object holds to objects of another kind: the same rules for every such field.

An ``ApiResourceReference`` in a spec (``environment_refs``, ``skill_refs``)
names an object of one kind in the referring object's org. Its ``kind`` may
be left empty; given, it must name that kind (any of the names the registry
knows it by). Its ``org`` may be left empty or be the object's own: a
reference into another org is refused, with one message whether or not that
org or object exists, so a refusal tells nothing about other orgs.

A reference is not resolved when it is written (it may name an object made
later, as ``apply`` may write them in any order); the executions that use it
resolve it in the object's org.
"""

from __future__ import annotations

from typing import Any

from stigmer_core import InvalidArgument, RequestContext
from stigmer_core.ids import is_valid_id


def _names(ctx: RequestContext, given: str, kind_name: str) -> bool:
    """Whether a reference's ``kind`` names ``kind_name``: by any name the registry knows it by."""
    found = ctx.registry.find(given)
    return found.name == kind_name if found is not None else given.lower() == kind_name.lower()


def keep_refs_in_org(ctx: RequestContext, field: str, kind_name: str, noun: str) -> None:
    """Refuse a reference in ``spec.<field>`` that names another kind or reaches into another org.

    A reference by id whose object the caller cannot see is left as it is:
    refusing it would tell that the id exists elsewhere. One the caller can
    see in another org (an administrator, or a member of both) is refused.
    """
    obj: Any = ctx.resource
    refs = getattr(obj.spec, field)
    if not refs:
        return
    org = obj.metadata.org
    kind = ctx.registry.find(kind_name)
    for i, ref in enumerate(refs):
        if ref.kind and not _names(ctx, ref.kind, kind_name):
            raise InvalidArgument.field(
                f"spec.{field}[{i}].kind", f"'{ref.kind}' is not {kind_name}: leave it empty or name {kind_name}"
            )
        elsewhere = ref.org and ref.org != org
        if not elsewhere and kind is not None and is_valid_id(ref.id, kind.id_prefix):  # no other id names one
            found: Any = ctx.store.get(kind, ref.id)
            elsewhere = found is not None and found.metadata.org != org
        if elsewhere:
            raise InvalidArgument.field(
                f"spec.{field}[{i}]",
                f"names {noun} of another org: references never cross orgs (this {ctx.kind.label} is in '{org}')",
            )
