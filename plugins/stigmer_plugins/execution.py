"""The AgentExecution kind (and the ExecutionContext kind it creates).

An execution is created from a session, or from an agent: then a new
session on the agent's default instance is created in the same
transaction. Its ExecutionContext (the instance's environments, then the
execution's runtime values) is created with it and owned by it; secret
runtime values live only there, encrypted, and the execution keeps the
redaction marker in their place. The execution is owned by its session and
references it and its agent with a ``live`` predicate, so neither can be
deleted, directly or by a cascade, while the execution runs.

Runners report through ``updateStatus`` under the shared lifecycle
(``lifecycle.py``); clients ``cancel`` and ``subscribe``. The spec is the
execution's input and cannot change after create.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from stigmer_core import (
    Access,
    CustomOperation,
    FailedPrecondition,
    IndexSpec,
    InvalidArgument,
    KindDeclaration,
    NotFound,
    Phase,
    RequestContext,
    Step,
    hookimpl,
    step,
)
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2
from stigmer_core.api.agentic.agentexecution.v1 import service_pb2 as execution_service
from stigmer_core.api.agentic.execution.v1 import execution_pb2
from stigmer_core.ids import slugify, unlike_id
from stigmer_core.kinds.declaration import Reference
from stigmer_core.kinds.runtime import Registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.watch import watch_object
from stigmer_plugins import executioncontext, headroom, lifecycle, phases, session
from stigmer_plugins.secrets import REDACTED, declare_sealed

KIND = "AgentExecution"
AGENT = "Agent"

AgentExecution = agentexecution_pb2.AgentExecution


def _free_slug(ctx: RequestContext, kind_name: str, org: str, base: str, unique: str) -> str:
    kind = ctx.registry.kind(kind_name)
    base = unlike_id(slugify(base)) or kind.id_prefix
    if ctx.store.id_for_slug(kind, org, base) is None:
        return base
    return f"{base[:50].rstrip('-')}-{unique[-12:]}"


def _session_for_agent(ctx: RequestContext, execution: AgentExecution) -> Any:
    ctx.store.check_id(ctx.registry.kind(AGENT), execution.spec.agent_id, "spec.agent_id")
    agent: Any = ctx.store.get(ctx.registry.kind(AGENT), execution.spec.agent_id)
    org = execution.metadata.org
    if agent is None or agent.metadata.org != org:
        raise NotFound(
            f"agent '{execution.spec.agent_id}' not found in org '{org}' (spec.agent_id)",
            metadata={"kind": AGENT, "id": execution.spec.agent_id, "field": "spec.agent_id"},
        )
    instance_id = agent.status.default_instance_id
    if not instance_id:
        raise FailedPrecondition(f"agent '{agent.metadata.slug}' has no default instance to open a session on")
    instance = session.require_instance(ctx, instance_id, org=org, field="agent.status.default_instance_id")
    first_line = execution.spec.message.strip().splitlines()[0] if execution.spec.message.strip() else ""
    return session.open_session(
        ctx,
        instance,
        name=f"{agent.metadata.name}: {first_line}"[:120],
        slug=_free_slug(ctx, session.KIND, org, execution.metadata.slug, execution.metadata.id),
        subject=first_line,
    )


def _existing_session(ctx: RequestContext, execution: AgentExecution) -> Any:
    ctx.store.check_id(ctx.registry.kind(session.KIND), execution.spec.session_id, "spec.session_id")
    found: Any = ctx.store.get(ctx.registry.kind(session.KIND), execution.spec.session_id)
    org = execution.metadata.org
    if found is None or found.metadata.org != org:
        raise NotFound(
            f"session '{execution.spec.session_id}' not found in org '{org}' (spec.session_id)",
            metadata={"kind": session.KIND, "id": execution.spec.session_id, "field": "spec.session_id"},
        )
    agent_id = found.status.agent_id
    if execution.spec.agent_id and execution.spec.agent_id != agent_id:
        raise InvalidArgument.field(
            "spec.agent_id",
            f"is '{execution.spec.agent_id}', but session '{found.metadata.slug}' is of agent '{agent_id}'",
        )
    return found


@step(Phase.KIND)
def resolve_session(ctx: RequestContext) -> None:
    """Attach the execution to its session (opening one for an agent id), and to that session's owner chain."""
    execution = ctx.resource
    assert isinstance(execution, AgentExecution)
    if execution.spec.session_id:
        found = _existing_session(ctx, execution)
    elif execution.spec.agent_id:
        found = _session_for_agent(ctx, execution)
    else:
        raise InvalidArgument.field("spec.session_id", "give a session_id, or an agent_id to open a new session")
    execution.spec.session_id = found.metadata.id
    execution.spec.agent_id = found.status.agent_id
    execution.status.agent_instance_id = found.spec.agent_instance_id
    del execution.metadata.owner_references[:]
    execution.metadata.owner_references.add(kind=session.KIND, id=found.metadata.id)


@step(Phase.KIND)
def create_context(ctx: RequestContext) -> None:
    """The context the runner reads: the instance's environments, then runtime_env."""
    execution = ctx.resource
    assert isinstance(execution, AgentExecution)
    instance = session.require_instance(
        ctx, execution.status.agent_instance_id, org=execution.metadata.org, field="spec.session_id"
    )
    environment_ids = executioncontext.resolve_environment_refs(
        ctx, instance.spec.environment_refs, org=execution.metadata.org, field="agent instance environment_refs"
    )
    for key, item in execution.spec.runtime_env.items():
        if item.is_secret and item.value == REDACTED:
            raise InvalidArgument.field(
                f'spec.runtime_env["{key}"].value', "is the redaction marker; a new execution needs the clear value"
            )
    runtime = {key: (item.value, item.is_secret) for key, item in execution.spec.runtime_env.items()}
    execution.status.execution_context_id = executioncontext.create_execution_context(
        ctx, execution_kind=KIND, execution=execution, environment_ids=environment_ids, runtime_env=runtime
    )


@step(Phase.KIND)
def start_pending(ctx: RequestContext) -> None:
    """Secret runtime values now live in the context only; the execution waits for a runner."""
    execution = ctx.resource
    assert isinstance(execution, AgentExecution)
    redact(execution)
    execution.status.phase = phases.PENDING


def _changed_input(given: Any, stored: Any) -> str | None:
    for field in ("session_id", "agent_id", "message"):
        if getattr(given.spec, field) != getattr(stored.spec, field):
            return f"spec.{field}"
    if given.spec.runtime_env != stored.spec.runtime_env:
        return "spec.runtime_env"
    return None


@step(Phase.CHECK)
def keep_input(ctx: RequestContext) -> None:
    """An execution's input is fixed at create; an update may leave out what the server filled in."""
    given, stored = ctx.kind.resource_in(ctx.request), ctx.existing
    assert isinstance(given, AgentExecution) and isinstance(stored, AgentExecution)
    if not given.HasField("spec"):
        given.spec.CopyFrom(stored.spec)
    for field in ("session_id", "agent_id"):
        if not getattr(given.spec, field):
            setattr(given.spec, field, getattr(stored.spec, field))
    redact(given)  # secrets come back as the marker; their values are fixed in the context
    changed = _changed_input(given, stored)
    if changed is not None:
        raise InvalidArgument.field(changed, "is immutable once the execution is created")


def redact(execution: Message) -> None:
    """Secret runtime values are the context's alone; the execution shows the marker."""
    for item in execution.spec.runtime_env.values():  # type: ignore[attr-defined]
        if item.is_secret:
            item.value = REDACTED


def _record_reason(ctx: RequestContext, execution: Message) -> None:
    reason = ctx.request.reason  # type: ignore[attr-defined]
    if reason:
        execution.status.error.CopyFrom(execution_pb2.ExecutionError(code="CANCELLED", message=reason))  # type: ignore[attr-defined]


def _phase(execution: Any) -> list[tuple[str, ...]]:
    return [(phases.phase_name(execution.status.phase),)] if execution.status.phase else []


def _session(execution: Any) -> list[tuple[str, ...]]:
    return [(execution.spec.session_id,)] if execution.spec.session_id else []


def _tags(obj: Any) -> list[tuple[str, ...]]:
    return [(tag,) for tag in sorted(set(obj.metadata.tags))]


def _written(*transactional: Step, access: Access | None = None) -> CustomOperation:
    return CustomOperation(
        steps=(
            standard.validate,
            standard.authorize,
            *transactional,
            standard.publish,
            standard.redact,
            standard.respond,
        ),
        writes=True,
        access=access,
    )


AGENT_EXECUTION = KindDeclaration(
    name=KIND,
    resource=AgentExecution,
    command_service=execution_service.DESCRIPTOR.services_by_name["AgentExecutionCommandController"],
    query_service=execution_service.DESCRIPTOR.services_by_name["AgentExecutionQueryController"],
    id_prefix="aex",
    key_prefix="agentexecutions",
    exported=False,  # a run-time record, not configuration
    steps={
        "create": (resolve_session, create_context, start_pending, headroom.fits_content),
        "update": (keep_input, headroom.fits_content),
        "delete": (executioncontext.shred_owned_contexts,),
    },
    operations={
        "updateStatus": _written(
            lifecycle.update_status(merge=lifecycle.merge_fields(append=("messages",), replace=("error",))),
            access=Access.RUN,  # what a runner reports; editors cancel
        ),
        "cancel": _written(lifecycle.cancel(id_field="id", on_cancel=_record_reason)),
        "listBySession": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.list_by("session", "session_id"))
        ),
        "subscribe": CustomOperation(
            steps=(
                standard.validate,
                standard.authorize,
                watch_object(id_field="execution_id", after_field="after_revision", until=lifecycle.ended),
            )
        ),
    },
    indexes=(
        IndexSpec("session", _session, org_scoped=False),
        IndexSpec("phase", _phase),
        IndexSpec("tag", _tags),
    ),
    references=(
        Reference("spec.session_id", session.KIND, live=lifecycle.live),
        Reference("spec.agent_id", AGENT, live=lifecycle.live),
    ),
    list_filters={"phase": "phase", "tags": "tag"},
    redact=redact,
    api_version="agentic.stigmer.ai/v1",
    plural="agentexecutions",
    aliases=("agent-execution", "agent-executions", "aex"),
    description="One message to an agent and the runner's answer, under the execution lifecycle.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [AGENT_EXECUTION, executioncontext.EXECUTION_CONTEXT]


@hookimpl
def stigmer_configure(registry: Registry) -> None:
    declare_sealed(registry, executioncontext.KIND, executioncontext.reseal_legacy)
