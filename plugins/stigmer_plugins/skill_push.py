"""The ``push`` command of the Skill kind: apply of the document a push describes.

A push names a skill by org + slug (or by the name in its SKILL.md front
matter) and carries its markdown, an optional zip and an optional tag. The
zip is checked before the transaction (it is CPU work on untrusted bytes);
inside it, the push becomes a Skill document laid over the stored skill, if
any (labels, tags and the description stay unless given), and runs the
standard apply steps, so a push makes a version exactly as an update does.
"""

from __future__ import annotations

import attrs

from stigmer_core import InvalidArgument, Phase, RequestContext, step
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.ids import looks_like_id, slugify
from stigmer_core.kinds.resources import id_shaped_slug
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline import validation
from stigmer_core.versioning import HASH
from stigmer_plugins import skill_artifact
from stigmer_plugins.skill_artifact import Artifact

PLAN = "skill.push"


@attrs.frozen
class Plan:
    """A checked push, kept in ``ctx.scratch`` for the transactional steps."""

    org: str
    name: str
    slug: str
    skill_md: str
    tag: str
    description: str
    """The request's: a push that gives none keeps the stored skill's."""
    front_description: str
    """The SKILL.md front matter's ``description:``, which a new skill takes when the push gives none."""
    artifact: Artifact | None
    data: bytes


def front_matter(markdown: str) -> dict[str, str]:
    """``key: value`` lines of a leading ``---`` block (what SKILL.md files use for name and description)."""
    lines = markdown.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return found
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t")):
            found[key.strip()] = value.strip().strip("'\"")
    return {}


def plan(req: skill_pb2.PushSkillRequest) -> Plan:
    """What a push writes, once its zip, markdown, tag and names are checked (import checks a skill's
    history with it before replaying any of it)."""
    artifact = skill_artifact.inspect(req.artifact) if req.artifact else None
    inner = artifact.skill_md if artifact is not None else None
    markdown = req.skill_md or inner or ""
    if not markdown:
        raise InvalidArgument.field("skill_md", "is required (or an artifact with a SKILL.md at its root)")
    if req.skill_md and inner is not None and inner != req.skill_md:
        raise InvalidArgument.field("skill_md", "differs from the artifact's SKILL.md; send one or make them agree")
    if HASH.match(req.tag.lower()):  # named here as the request's field, before the document's rules
        raise InvalidArgument.field("tag", "must not look like a version hash (64 hex digits)")
    front = front_matter(markdown)
    name = req.name or front.get("name", "")
    slug = req.slug or slugify(name)
    if not slug:
        raise InvalidArgument.field("name", "is required (or a slug, or `name:` in the SKILL.md front matter)")
    if looks_like_id(slug):  # a push names its skill by slug: an id given there made a new skill of that slug
        raise id_shaped_slug(slug, "slug" if req.slug else "name", derived=not req.slug)
    return Plan(
        org=req.org,
        name=name,
        slug=slug,
        skill_md=markdown,
        tag=req.tag,
        description=req.description,
        front_description=front.get("description", ""),
        artifact=artifact,
        data=req.artifact,
    )


@step(Phase.PREPARE)
def check_push(ctx: RequestContext) -> None:
    """Inspect the zip and settle name, slug and markdown, outside the transaction."""
    req = ctx.request
    assert isinstance(req, skill_pb2.PushSkillRequest)
    ctx.scratch[PLAN] = plan(req)


def _document(ctx: RequestContext, plan: Plan, org: str) -> skill_pb2.Skill:
    doc = skill_pb2.Skill()
    stored_id = ctx.store.id_for_slug(ctx.kind, org, plan.slug)
    stored = ctx.store.get(ctx.kind, stored_id) if stored_id is not None else None
    if isinstance(stored, skill_pb2.Skill):
        doc.CopyFrom(stored)
        doc.ClearField("status")
        doc.metadata.resource_version = 0
    else:
        doc.metadata.org = org
        doc.metadata.slug = plan.slug
        doc.metadata.name = plan.name or plan.slug
    if plan.name:
        doc.metadata.name = plan.name
    doc.spec.skill_md = plan.skill_md
    doc.spec.tag = plan.tag
    if plan.description:
        doc.spec.description = plan.description
    elif not isinstance(stored, skill_pb2.Skill):  # every later push's SKILL.md replaced one set on purpose
        doc.spec.description = plan.front_description
    validation.check(doc)
    return doc


@step(Phase.LOAD)
def dispatch_push(ctx: RequestContext) -> None:
    """Run the standard apply steps over the pushed document."""
    plan: Plan = ctx.scratch[PLAN]
    ctx.request = _document(ctx, plan, plan.org or ctx.default_org)
    standard.dispatch_apply(ctx)
    ctx.operation = "push"
