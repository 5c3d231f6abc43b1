"""The Session kind: a conversation with an agent, against one of its instances.

A session must name an AgentInstance of its own org (a declared reference,
checked in the writing transaction) and is owned by it, so deleting the
instance, or the agent that owns the instance, deletes its sessions and
their executions; the cascade guard refuses that while one of those
executions is still running. The instance's agent is recorded in
``status.agent_id`` at create, so ``listByAgent`` is one index range rather
than a join over instances.
"""

from __future__ import annotations

from typing import Any

from stigmer_core import (
    CustomOperation,
    IndexSpec,
    InvalidArgument,
    KindDeclaration,
    NotFound,
    RequestContext,
    hookimpl,
)
from stigmer_core.api.agentic.session.v1 import service_pb2 as session_service
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.kinds.declaration import Reference
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import step

KIND = "Session"
INSTANCE = "AgentInstance"

Session = session_pb2.Session


def require_instance(ctx: RequestContext, instance_id: str, *, org: str, field: str) -> Any:
    """The AgentInstance ``instance_id`` of ``org``, or NOT_FOUND naming ``field``."""
    ctx.store.check_id(ctx.registry.kind(INSTANCE), instance_id, field)
    instance: Any = ctx.store.get(ctx.registry.kind(INSTANCE), instance_id)
    if instance is None or instance.metadata.org != org:
        raise NotFound(
            f"agent instance '{instance_id}' not found in org '{org}' ({field})",
            metadata={"kind": INSTANCE, "id": instance_id, "field": field},
        )
    return instance


def bind_to_instance(session: Session, instance: Any) -> None:
    """Owner and denormalized agent of a session being created."""
    del session.metadata.owner_references[:]
    session.metadata.owner_references.add(kind=INSTANCE, id=instance.metadata.id)
    session.status.agent_id = instance.spec.agent_id


def open_session(ctx: RequestContext, instance: Any, *, name: str, slug: str, subject: str) -> Session:
    """Create a session on ``instance`` from another kind's step, in ctx's transaction."""
    kind = ctx.registry.kind(KIND)
    session = Session()
    session.metadata.name = name[:253]
    session.metadata.slug = slug
    session.spec.agent_instance_id = instance.metadata.id
    session.spec.subject = subject[:1024]
    ctx.store.stamp_new(kind, session, org=instance.metadata.org, principal=ctx.principal)
    bind_to_instance(session, instance)
    ctx.store.check_slug_free(kind, session)
    ctx.store.insert(kind, session)
    return session


@step(Phase.KIND)
def attach_to_instance(ctx: RequestContext) -> None:
    session = ctx.resource
    assert isinstance(session, Session)
    instance = require_instance(
        ctx, session.spec.agent_instance_id, org=session.metadata.org, field="spec.agent_instance_id"
    )
    bind_to_instance(session, instance)


@step(Phase.CHECK)
def keep_agent_instance(ctx: RequestContext) -> None:
    given, existing = ctx.kind.resource_in(ctx.request), ctx.existing
    assert isinstance(given, Session) and isinstance(existing, Session)
    if given.spec.agent_instance_id != existing.spec.agent_instance_id:
        raise InvalidArgument.field(
            "spec.agent_instance_id", f"is immutable (stored: '{existing.spec.agent_instance_id}')"
        )


def _agent(session: Any) -> list[tuple[str, ...]]:
    return [(session.status.agent_id,)] if session.status.agent_id else []


def _tags(obj: Any) -> list[tuple[str, ...]]:
    """One index entry per distinct tag, for ``list`` filtered by tags."""
    return [(tag,) for tag in sorted(set(obj.metadata.tags))]


SESSION = KindDeclaration(
    name=KIND,
    resource=Session,
    command_service=session_service.DESCRIPTOR.services_by_name["SessionCommandController"],
    query_service=session_service.DESCRIPTOR.services_by_name["SessionQueryController"],
    id_prefix="ses",
    key_prefix="sessions",
    steps={"create": (attach_to_instance,), "update": (keep_agent_instance,)},
    operations={
        "listByAgent": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.list_by("agent", "agent_id"))
        ),
    },
    indexes=(IndexSpec("agent", _agent, org_scoped=False), IndexSpec("tag", _tags)),
    references=(Reference("spec.agent_instance_id", INSTANCE),),
    list_filters={"tags": "tag"},
    api_version="agentic.stigmer.ai/v1",
    plural="sessions",
    aliases=("ses",),
    description="A conversation with an agent instance; its executions are the turns.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [SESSION]
