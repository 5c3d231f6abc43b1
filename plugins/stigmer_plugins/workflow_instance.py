"""Steps tying WorkflowInstances to their Workflow.

A workflow's default instance is written in the workflow's own transaction.
Its id is chosen before the workflow is persisted, so the workflow's status
names it in the very write that creates the workflow (one event, no second
update); the instance itself is inserted right after the workflow, because
the instance's reference to its workflow is checked on insert and the
workflow must already be in the transaction by then.
"""

from __future__ import annotations

from stigmer_core import FailedPrecondition, InvalidArgument, Phase, RequestContext, step
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.ids import derived_id

WORKFLOW = "Workflow"
WORKFLOW_INSTANCE = "WorkflowInstance"
_DEFAULT_INSTANCE = "workflow.default_instance_id"


@step(Phase.KIND)
def reserve_default_instance(ctx: RequestContext) -> None:
    """Name the default instance in the workflow's status before the workflow is written."""
    workflow = ctx.resource
    assert isinstance(workflow, workflow_pb2.Workflow)
    instance_id = derived_id(ctx.registry.kind(WORKFLOW_INSTANCE).id_prefix, workflow.metadata.id, "default")
    workflow.status.default_instance_id = instance_id
    ctx.scratch[_DEFAULT_INSTANCE] = instance_id


@step(Phase.PERSIST)
def create_default_instance(ctx: RequestContext) -> None:
    """Runs after the workflow's own insert (framework steps lead each phase)."""
    workflow = ctx.resource
    assert isinstance(workflow, workflow_pb2.Workflow)
    instance = workflowinstance_pb2.WorkflowInstance()
    instance.metadata.id = ctx.scratch[_DEFAULT_INSTANCE]
    instance.metadata.name = f"{workflow.metadata.name} (default)"[:253]
    instance.metadata.slug = f"{workflow.metadata.slug[:55]}-default"
    instance.metadata.owner_references.add(kind=WORKFLOW, id=workflow.metadata.id)
    instance.spec.workflow_id = workflow.metadata.id
    instance.spec.description = f"Default instance of workflow '{workflow.metadata.slug}'"
    fallback = f"{workflow.metadata.slug[:40]}-default-{workflow.metadata.id[-8:]}"  # one made by hand took it
    ctx.store.create(
        ctx.registry.kind(WORKFLOW_INSTANCE), instance, org=ctx.org, principal=ctx.principal, fallback_slug=fallback
    )


@step(Phase.BUILD)
def own_by_workflow(ctx: RequestContext) -> None:
    """Deleting the workflow deletes the instance; a caller cannot pick another owner."""
    instance = ctx.resource
    assert isinstance(instance, workflowinstance_pb2.WorkflowInstance)
    del instance.metadata.owner_references[:]
    instance.metadata.owner_references.add(kind=WORKFLOW, id=instance.spec.workflow_id)


@step(Phase.CHECK)
def keep_workflow_id(ctx: RequestContext) -> None:
    given = ctx.kind.resource_in(ctx.request)
    existing = ctx.existing
    assert isinstance(given, workflowinstance_pb2.WorkflowInstance)
    assert isinstance(existing, workflowinstance_pb2.WorkflowInstance)
    if given.spec.workflow_id != existing.spec.workflow_id:
        raise InvalidArgument.field("spec.workflow_id", f"is immutable (stored: '{existing.spec.workflow_id}')")


@step(Phase.KIND)
def refuse_default_instance_delete(ctx: RequestContext) -> None:
    """The default instance lives as long as its workflow: runs by workflow id need it."""
    instance = ctx.existing
    assert isinstance(instance, workflowinstance_pb2.WorkflowInstance)
    workflow = ctx.store.get(ctx.registry.kind(WORKFLOW), instance.spec.workflow_id)
    if isinstance(workflow, workflow_pb2.Workflow) and workflow.status.default_instance_id == instance.metadata.id:
        raise FailedPrecondition(
            f"workflow instance '{instance.metadata.slug}' is the default instance of workflow "
            f"'{workflow.metadata.slug}'; delete the workflow instead",
            reason="DEFAULT_INSTANCE",
            metadata={"kind": "WorkflowInstance", "id": instance.metadata.id, "workflowId": instance.spec.workflow_id},
        )
