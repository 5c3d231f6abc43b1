"""References an object holds to objects of another kind: the same rules for every such field.

An ``ApiResourceReference`` in a spec (``environment_refs``, ``skill_refs``)
names an object of one kind in the referring object's org. Its ``kind`` may
be left empty; given, it must name that kind (any of the names the registry
knows it by). Its ``org`` may be left empty or be the object's own: a
reference into another org is refused, with one message whether or not that
org or object exists, so a refusal tells nothing about other orgs.

A reference is not resolved when it is written (it may name an object made
later, as ``apply`` may write them in any order); the executions that use it
resolve it in the object's org. What can be told without resolving it is
checked: it names something (a slug or an id), an id is a well-formed id of
the referenced kind (a typo, another kind's id or a stray space would
otherwise show only when an execution cannot start), and a reference giving
both names one object: executions and an environment's delete guard go by the
id alone, so a slug naming another object would be shown but never used, and
would not keep the object it names from being deleted.
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
        if not ref.id and not ref.slug:
            raise InvalidArgument.field(f"spec.{field}[{i}]", f"names no {kind_name}: give its slug or its id")
        if ref.id and kind is not None and not is_valid_id(ref.id, kind.id_prefix):
            raise InvalidArgument.field(
                f"spec.{field}[{i}].id",
                f"'{ref.id}' is not {noun}'s id ({kind.id_prefix}-<26 lowercase ULID characters>): "
                "give the id get or list shows, or the slug instead",
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
        if ref.id and ref.slug and kind is not None:
            _same_object(ctx, kind, org, ref, f"spec.{field}[{i}]")


def _same_object(ctx: RequestContext, kind: Any, org: str, ref: Any, where: str) -> None:
    """A reference giving a slug and an id is kept only when the slug names, in ``org``, the object with that id.

    Only the org's own slugs are looked up, so the answer tells nothing about other orgs.
    """
    if ctx.store.id_for_slug(kind, org, ref.slug) == ref.id:
        return
    raise InvalidArgument.field(
        where,
        f"gives slug '{ref.slug}' and id '{ref.id}', which do not name the same {kind.label} in org '{org}' "
        f"(the id alone would be used): give one of them",
    )
