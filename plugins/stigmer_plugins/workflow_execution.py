"""Steps of WorkflowExecution's standard operations and its declared indexes.

Creating an execution resolves what it runs inside the writing transaction
(an instance id as given, or a workflow id to that workflow's default
instance), snapshots the workflow's task names as PENDING task statuses,
and creates the run's ExecutionContext. Secret runtime values go to the
context only, encrypted; the execution keeps the redaction marker, so no
secret is stored in clear nor returned by any rpc of this kind.

The spec is the run's input and does not change afterwards; an update may
change metadata only. Re-sending the stored spec (as ``apply`` of the same
document does) is not a change: ids the server filled in and secret values
(which it cannot compare) are taken as stored.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

from stigmer_core import FailedPrecondition, InvalidArgument, NotFound, Phase, RequestContext, step
from stigmer_core.api.agentic.execution.v1 import execution_pb2
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_plugins.executioncontext import create_execution_context, resolve_environment_refs
from stigmer_plugins.phases import PENDING, phase_name
from stigmer_plugins.secrets import REDACTED
from stigmer_plugins.workflow_tasks import close_open_tasks

EXECUTION = "WorkflowExecution"
WorkflowExecution = workflowexecution_pb2.WorkflowExecution
_INSTANCE = "workflowexecution.instance"


def _instance(ctx: RequestContext, instance_id: str, field: str) -> workflowinstance_pb2.WorkflowInstance:
    ctx.store.check_id(ctx.registry.kind("WorkflowInstance"), instance_id, field)
    found = ctx.store.get(ctx.registry.kind("WorkflowInstance"), instance_id)
    if not isinstance(found, workflowinstance_pb2.WorkflowInstance) or found.metadata.org != ctx.org:
        raise NotFound(
            f"workflow instance '{instance_id}' not found in org '{ctx.org}' ({field})",
            metadata={"kind": "WorkflowInstance", "id": instance_id, "field": field},
        )
    return found


def _workflow(ctx: RequestContext, workflow_id: str) -> workflow_pb2.Workflow:
    ctx.store.check_id(ctx.registry.kind("Workflow"), workflow_id, "spec.workflow_id")
    found = ctx.store.get(ctx.registry.kind("Workflow"), workflow_id)
    if not isinstance(found, workflow_pb2.Workflow) or found.metadata.org != ctx.org:
        raise NotFound(
            f"workflow '{workflow_id}' not found in org '{ctx.org}' (spec.workflow_id)",
            metadata={"kind": "Workflow", "id": workflow_id, "field": "spec.workflow_id"},
        )
    return found


@step(Phase.KIND)
def resolve_workflow(ctx: RequestContext) -> None:
    """Fill in both ids, and start the run PENDING with one entry per workflow task."""
    execution = ctx.resource
    assert isinstance(execution, WorkflowExecution)
    spec = execution.spec
    if spec.workflow_instance_id:
        instance = _instance(ctx, spec.workflow_instance_id, "spec.workflow_instance_id")
        if spec.workflow_id and spec.workflow_id != instance.spec.workflow_id:
            raise InvalidArgument.field(
                "spec.workflow_id",
                f"'{spec.workflow_id}' is not the workflow of instance '{instance.metadata.slug}' "
                f"('{instance.spec.workflow_id}'); give either id alone",
            )
        workflow = _workflow(ctx, instance.spec.workflow_id)
    elif spec.workflow_id:
        workflow = _workflow(ctx, spec.workflow_id)
        default_id = workflow.status.default_instance_id
        if not default_id:
            raise FailedPrecondition(
                f"workflow '{workflow.metadata.slug}' has no default instance; give spec.workflow_instance_id"
            )
        instance = _instance(ctx, default_id, f"default instance of workflow '{workflow.metadata.slug}'")
    else:
        raise InvalidArgument.field("spec.workflow_instance_id", "give a workflow instance id, or spec.workflow_id")
    spec.workflow_instance_id = instance.metadata.id
    spec.workflow_id = workflow.metadata.id
    execution.status.phase = PENDING
    for task in workflow.spec.tasks:
        execution.status.tasks.add(task_name=task.name, task_kind=task.kind, phase=PENDING)
    ctx.scratch[_INSTANCE] = instance


@step(Phase.KIND)
def create_context(ctx: RequestContext) -> None:
    """The run's values in the same transaction; then no secret stays on the execution."""
    execution = ctx.resource
    instance = ctx.scratch[_INSTANCE]
    assert isinstance(execution, WorkflowExecution)
    assert isinstance(instance, workflowinstance_pb2.WorkflowInstance)
    environment_ids = resolve_environment_refs(
        ctx,
        instance.spec.environment_refs,
        org=ctx.org,
        field=f"spec.environment_refs of workflow instance '{instance.metadata.slug}'",
    )
    runtime_env = {key: (item.value, item.is_secret) for key, item in execution.spec.runtime_env.items()}
    create_execution_context(
        ctx, execution_kind=EXECUTION, execution=execution, environment_ids=environment_ids, runtime_env=runtime_env
    )
    hide_secrets(execution)


def hide_secrets(execution: Message) -> None:
    """Secret runtime values become the redaction marker (also the kind's ``redact``)."""
    for item in execution.spec.runtime_env.values():  # type: ignore[attr-defined]
        if item.is_secret:
            item.value = REDACTED


@step(Phase.CHECK)
def keep_spec(ctx: RequestContext) -> None:
    """The inputs of a run are fixed: refuse a different spec, accept the stored one re-sent."""
    given = ctx.kind.resource_in(ctx.request)
    existing = ctx.existing
    assert isinstance(given, WorkflowExecution) and isinstance(existing, WorkflowExecution)
    sent = workflowexecution_pb2.WorkflowExecutionSpec()
    sent.CopyFrom(given.spec)
    stored = existing.spec
    for field in ("workflow_instance_id", "workflow_id"):
        if not getattr(sent, field):
            setattr(sent, field, getattr(stored, field))
    for key, item in sent.runtime_env.items():
        kept = stored.runtime_env.get(key)
        if item.is_secret and kept is not None and kept.is_secret:
            item.value = kept.value
    if sent != stored:
        raise InvalidArgument.field(
            "spec", "is immutable once the execution exists; create a new execution to run with other inputs"
        )
    given.spec.CopyFrom(stored)


def record_cancel_reason(ctx: RequestContext, execution: Message) -> None:
    """For ``lifecycle.cancel``: close the open tasks and keep the caller's reason."""
    assert isinstance(execution, WorkflowExecution)
    close_open_tasks(execution.status)
    reason = getattr(ctx.request, "reason", "")
    if reason:
        execution.status.error.CopyFrom(execution_pb2.ExecutionError(code="CANCELLED", message=reason))


def phase_values(execution: Message) -> Iterable[tuple[str, ...]]:
    """Index ``phase``: by enum value name, as ``list`` reads its ``phase`` filter."""
    phase = execution.status.phase  # type: ignore[attr-defined]
    return [(phase_name(phase),)] if phase else []


def tag_values(execution: Message) -> Iterable[tuple[str, ...]]:
    return [(tag,) for tag in sorted(set(execution.metadata.tags))]  # type: ignore[attr-defined]


def workflow_values(execution: Message) -> Iterable[tuple[str, ...]]:
    """Index ``workflow``: both ids, so ``listByWorkflow`` takes either (their prefixes differ)."""
    spec = execution.spec  # type: ignore[attr-defined]
    return [(value,) for value in (spec.workflow_id, spec.workflow_instance_id) if value]
