"""Stigmer's published Session (``ai.stigmer.agentic.session.v1``) as the kind ``StigmerSession``.

A session names its agent by reference (``spec.agent_ref``, kind
``ApiResourceKind.agent``); creating one resolves it to the StigmerAgent's
id in ``status.agent_id``. That id is a declared reference (the agent must
exist, and cannot be deleted while sessions point at it) and a declared
index, which serves ``listByAgent``. Running sessions (events, tool use,
harness state) is the hosted platform's work and answers UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

from ai.stigmer.agentic.session.v1 import api_pb2, command_pb2, query_pb2
from google.protobuf.message import Message
from stigmer_core import (
    CustomOperation,
    IndexSpec,
    InvalidArgument,
    KindDeclaration,
    NotFound,
    Phase,
    RequestContext,
    Unimplemented,
    step,
)
from stigmer_core.kinds.declaration import Reference
from stigmer_core.pipeline import steps as standard

from stigmer_published.agent import AGENT, API_VERSION
from stigmer_published.common import checked_new_state, masked_update, unimplemented, wire_kind

COMMANDS = command_pb2.DESCRIPTOR.services_by_name["SessionCommandController"]
QUERIES = query_pb2.DESCRIPTOR.services_by_name["SessionQueryController"]
AGENT_REF = "spec.agent_ref"
MUTABLE = ("metadata.name", "metadata.labels", "metadata.tags", "spec.subject", "spec.metadata")
NOT_RUN = "sessions are stored here, not run"


def _agent_id(session: Message) -> list[tuple[str, ...]]:
    assert isinstance(session, api_pb2.Session)
    return [(session.status.agent_id,)] if session.status.agent_id else []


@step(Phase.KIND)
def resolve_agent(ctx: RequestContext) -> None:
    """``spec.agent_ref`` (by id, or by slug in the session's org unless it names one) -> ``status.agent_id``."""
    session = ctx.resource
    assert isinstance(session, api_pb2.Session)
    ref = session.spec.agent_ref
    if not session.spec.HasField("agent_ref"):
        return
    agents = ctx.registry.kind(AGENT.name)
    if ref.kind and agents.reference_kinds is not None and ref.kind not in agents.reference_kinds:
        raise InvalidArgument.field(f"{AGENT_REF}.kind", "must name an agent")
    if ref.id:
        agent = ctx.store.get(agents, ref.id)
    else:
        agent_id = ctx.store.id_for_slug(agents, ref.org or ctx.org, ref.slug)
        agent = None if agent_id is None else ctx.store.get(agents, agent_id)
    if agent is None:
        raise NotFound(f"agent '{ref.id or ref.slug}' not found in org '{ref.org or ctx.org}' ({AGENT_REF})")
    session.status.agent_id = agent.metadata.id  # type: ignore[attr-defined]


@step(Phase.KIND)
def keep_agent_ref(ctx: RequestContext) -> None:
    """The agent a session runs is fixed at creation (status.agent_id follows from it):
    refuse an update whose built state, mask applied, names another one."""
    built, existing = ctx.resource, ctx.existing
    assert isinstance(built, api_pb2.Session) and isinstance(existing, api_pb2.Session)
    if built.spec.agent_ref != existing.spec.agent_ref:
        raise InvalidArgument.field(AGENT_REF, "is immutable; create a new session for another agent")


@step(Phase.VALIDATE)
def refuse_label_filter(ctx: RequestContext) -> None:
    request: Any = ctx.request
    if request.labels:
        raise Unimplemented(
            f"{QUERIES.full_name}.listByAgent does not filter by labels here; use list with labels instead"
        )


SESSION = KindDeclaration(
    name="StigmerSession",
    resource=api_pb2.Session,
    command_service=COMMANDS,
    query_service=QUERIES,
    id_prefix="pses",
    key_prefix="published-sessions",
    steps={
        "create": (wire_kind("Session"), resolve_agent, checked_new_state()),
        "update": (keep_agent_ref, masked_update()),
    },
    indexes=(IndexSpec("agent", _agent_id, org_scoped=False),),
    references=(Reference("status.agent_id", AGENT.name),),
    operations={
        "listByAgent": CustomOperation(
            steps=(standard.validate, standard.authorize, refuse_label_filter, standard.list_by("agent", "agent_id"))
        ),
        **{
            method: CustomOperation(steps=(unimplemented(COMMANDS, method, NOT_RUN),))
            for method in (
                "updateSubject",
                "reviewFileChanges",
                "confirmToolUse",
                "grantPermission",
                "interrupt",
                "appendEvents",
                "bindHarnessState",
            )
        },
        **{
            method: CustomOperation(steps=(unimplemented(QUERIES, method, NOT_RUN),))
            for method in ("listByChannel", "listEvents", "streamEvents")
        },
    },
    mutable=MUTABLE,
    api_version=API_VERSION,
    plural="stigmer-sessions",
    description="Stigmer's published Session, served for the official stigmer-sdk client.",
)
