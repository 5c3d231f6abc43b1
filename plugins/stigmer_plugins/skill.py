"""The Skill kind: a SKILL.md and an optional zip, versioned by content.

A version is the SHA-256 of the markdown and the artifact's hash
(``versioning.Versioning``); the description and the tag are not content,
so changing them alone makes no version. ``push`` writes the markdown and
zip it carries (a push without a zip makes a version without one); create,
update and apply write documents, which may carry the zip in
``spec.artifact`` (an export writes it there, so an import makes the same
version, and the earlier versions in ``history``: ``skill_history``); a
document without one keeps the current version's artifact (and is held to the SKILL.md at
its root, as a document's or a push's own zip is).
The zip is never stored in the object: it is kept with the versions, and
``getArtifact`` returns it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from stigmer_core import (
    CustomOperation,
    InvalidArgument,
    KindDeclaration,
    NotFound,
    Phase,
    RequestContext,
    hookimpl,
    step,
)
from stigmer_core.api.agentic.skill.v1 import service_pb2 as skill_service
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.step import FunctionStep
from stigmer_core.versioning import Versioning, frame, get_blob, merge_steps, put_blob
from stigmer_plugins import skill_artifact, skill_history
from stigmer_plugins.skill_artifact import Artifact
from stigmer_plugins.skill_push import PLAN, Plan, check_push, dispatch_push

INLINE = "skill.inline_artifact"

_STORAGE_KEY = re.compile(r"(?P<id>skl-[0-9a-z]{1,60})/(?P<sha>[0-9a-f]{64})")


def _skill(obj: object) -> skill_pb2.Skill:
    assert isinstance(obj, skill_pb2.Skill)
    return obj


def _content(obj: object) -> bytes:
    skill = _skill(obj)
    return frame(skill.spec.skill_md.encode(), skill.status.artifact.sha256.encode())


VERSIONING = Versioning(content=_content, tag=lambda obj: _skill(obj).spec.tag)


@step(Phase.KIND)
def require_markdown(ctx: RequestContext) -> None:
    if not _skill(ctx.resource).spec.skill_md:
        raise InvalidArgument.field("spec.skill_md", "is required")


@step(Phase.PREPARE)
def check_inline_artifact(ctx: RequestContext) -> None:
    """A document's ``spec.artifact``, checked as a push's zip is, outside the transaction."""
    skill = ctx.kind.resource_in(ctx.request)
    if not isinstance(skill, skill_pb2.Skill) or not skill.spec.artifact:
        return
    try:
        artifact = skill_artifact.inspect(skill.spec.artifact)
    except InvalidArgument as exc:
        raise InvalidArgument.field("spec.artifact", exc.violations[0].description) from None
    if artifact.skill_md is not None and artifact.skill_md != skill.spec.skill_md:
        raise InvalidArgument.field("spec.artifact", "holds a SKILL.md that differs from spec.skill_md; make them agree")
    ctx.scratch[INLINE] = (artifact, skill.spec.artifact)


@step(Phase.KIND)
def attach_artifact(ctx: RequestContext) -> None:
    """A push sets (or clears) the artifact, a document's ``spec.artifact`` sets it; other writes
    keep the stored one."""
    skill = _skill(ctx.resource)
    skill.spec.ClearField("artifact")  # kept with the versions, never in the object
    plan: Plan | None = ctx.scratch.get(PLAN)
    inline: tuple[Artifact, bytes] | None = ctx.scratch.get(INLINE)
    if plan is None and inline is None:
        _check_kept_artifact(ctx, skill)
        return
    found, data = (plan.artifact, plan.data) if plan is not None else inline  # type: ignore[misc]
    if found is None:
        skill.status.ClearField("artifact")
        skill.status.artifact_storage_key = ""
        return
    digest = put_blob(ctx, skill.metadata.id, data)
    skill.status.artifact.CopyFrom(
        skill_pb2.SkillArtifact(
            sha256=digest,
            size_bytes=found.size_bytes,
            uncompressed_bytes=found.uncompressed_bytes,
            file_count=found.file_count,
        )
    )
    skill.status.artifact_storage_key = f"{skill.metadata.id}/{digest}"


def _check_kept_artifact(ctx: RequestContext, skill: skill_pb2.Skill) -> None:
    """A document without a zip keeps the current one: refuse new markdown that the SKILL.md in
    that zip contradicts. Stored, the version was one that neither a push nor an import takes (an
    export of it could not be imported anywhere); the zip is read only when the markdown changed."""
    old: Any = ctx.existing
    if old is None or old.spec.skill_md == skill.spec.skill_md or not skill.status.artifact.sha256:
        return
    data = get_blob(ctx.store.txn, ctx.kind, skill.metadata.id, skill.status.artifact.sha256)
    inner = skill_artifact.inspect(data).skill_md if data is not None else None
    if inner is not None and inner != skill.spec.skill_md:
        raise InvalidArgument.field(
            "spec.skill_md",
            "differs from the SKILL.md in the zip this skill keeps (a document without spec.artifact keeps the "
            "current version's zip): send the zip holding this SKILL.md in spec.artifact, or push the markdown "
            "alone (a push without a zip makes a version without one)",
        )


@step(Phase.KIND)
def mirror_version(ctx: RequestContext) -> None:
    """``status.version_hash`` and ``state``, as the published API reports them."""
    skill = _skill(ctx.resource)
    skill.status.version_hash = skill.metadata.version.id
    skill.status.state = skill_pb2.SKILL_STATE_READY


def _get_artifact(ctx: RequestContext) -> None:
    req = ctx.request
    assert isinstance(req, skill_pb2.GetArtifactRequest)
    found = _STORAGE_KEY.fullmatch(req.artifact_storage_key)
    if found is None:
        raise InvalidArgument.field(
            "artifact_storage_key", "must be '<skill id>/<sha256>' as a skill's status gives it"
        )
    # The blob is read by key: the skill, looked up as the caller sees it, keeps another org's out.
    visible = ctx.store.get(ctx.kind, found["id"]) is not None
    data = get_blob(ctx.store.txn, ctx.kind, found["id"], found["sha"]) if visible else None
    if data is None:
        raise NotFound(f"skill artifact '{req.artifact_storage_key}' not found")
    ctx.response = skill_pb2.GetArtifactResponse(artifact=data)


def fill_export(obj: Message, call: Callable[[str, Message], Message]) -> list[str]:
    """What an exported skill needs and a get does not return: its zip, in ``spec.artifact``.
    Its earlier versions go in the document's ``history`` (``skill_history``). Notes: versions an
    import would refuse (``skill_history.contradicted``)."""
    skill: Any = obj  # a Skill, of the server's descriptors when the export lists over reflection
    key = skill.status.artifact_storage_key
    if key:
        found: Any = call("getArtifact", skill_pb2.GetArtifactRequest(artifact_storage_key=key))
        skill.spec.artifact = found.artifact
    return skill_history.contradicted(skill, call, bytes(skill.spec.artifact))


_WRITE_STEPS = (require_markdown, attach_artifact)

SKILL = KindDeclaration(
    name="Skill",
    resource=skill_pb2.Skill,
    command_service=skill_service.DESCRIPTOR.services_by_name["SkillCommandController"],
    query_service=skill_service.DESCRIPTOR.services_by_name["SkillQueryController"],
    id_prefix="skl",
    key_prefix="skills",
    steps=merge_steps(
        {"create": (check_inline_artifact, *_WRITE_STEPS), "update": (check_inline_artifact, *_WRITE_STEPS)},
        {"apply": (check_inline_artifact,)},
        VERSIONING.steps(),
        {"create": (mirror_version,), "update": (mirror_version,)},
    ),
    operations={
        "push": CustomOperation(steps=(standard.validate, check_push, standard.authorize, dispatch_push), writes=True),
        "listVersions": CustomOperation(
            steps=(standard.validate, standard.authorize, VERSIONING.list_versions("skill_id"))
        ),
        "listTags": CustomOperation(
            steps=(
                standard.validate,
                standard.authorize,
                VERSIONING.list_tags("skill_id", skill_pb2.ListSkillTagsResponse),
            )
        ),
        "getArtifact": CustomOperation(
            steps=(standard.validate, standard.authorize, FunctionStep("get_artifact", Phase.LOAD, _get_artifact))
        ),
    },
    api_version="agentic.stigmer.ai/v1",
    plural="skills",
    aliases=("sk",),
    export_fill=fill_export,
    export_history=skill_history.export_history,
    import_history=skill_history.replay_history,
    description="Knowledge for agents: a SKILL.md and its files, versioned by content hash.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [SKILL]
