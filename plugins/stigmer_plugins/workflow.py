"""Workflow, WorkflowInstance and WorkflowExecution kinds.

A Workflow is validated as a whole on every write (``workflow_validation``);
creating one creates its default WorkflowInstance in the same transaction
and records the instance's id in the workflow's status. Instances reference
their workflow (same org, checked in the writing transaction) and are owned
by it, so deleting the workflow deletes them.

A WorkflowExecution runs an instance (``workflow_execution``) under the
shared execution lifecycle (``lifecycle``), with per-task statuses
(``workflow_tasks``). It references its instance and workflow, so neither
can be deleted while a run that has not ended points at it; it owns its
ExecutionContext, which goes with it.
"""

from __future__ import annotations

from stigmer_core import Access, CustomOperation, IndexSpec, KindDeclaration, hookimpl
from stigmer_core.api.agentic.workflow.v1 import service_pb2 as workflow_service
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import service_pb2 as execution_service
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import service_pb2 as instance_service
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.kinds.declaration import Reference
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.watch import watch_object
from stigmer_plugins import headroom, lifecycle
from stigmer_plugins import workflow_execution as executions
from stigmer_plugins import workflow_instance as instances
from stigmer_plugins.environment import ENVIRONMENT_REFS, keep_environment_refs_in_org
from stigmer_plugins.executioncontext import shred_owned_contexts
from stigmer_plugins.workflow_tasks import check_report, merge_report
from stigmer_plugins.workflow_validation import validate_workflow

API_VERSION = "agentic.stigmer.ai/v1"

WORKFLOW = KindDeclaration(
    name="Workflow",
    resource=workflow_pb2.Workflow,
    command_service=workflow_service.DESCRIPTOR.services_by_name["WorkflowCommandController"],
    query_service=workflow_service.DESCRIPTOR.services_by_name["WorkflowQueryController"],
    id_prefix="wfl",
    key_prefix="workflows",
    steps={
        "create": (validate_workflow, instances.reserve_default_instance, instances.create_default_instance),
        "update": (validate_workflow,),
        "apply": (validate_workflow,),
    },
    api_version=API_VERSION,
    plural="workflows",
    aliases=("wf",),
    description="An ordered list of tasks in the Serverless Workflow DSL's shape.",
)

WORKFLOW_INSTANCE = KindDeclaration(
    name="WorkflowInstance",
    resource=workflowinstance_pb2.WorkflowInstance,
    command_service=instance_service.DESCRIPTOR.services_by_name["WorkflowInstanceCommandController"],
    query_service=instance_service.DESCRIPTOR.services_by_name["WorkflowInstanceQueryController"],
    id_prefix="wfi",
    key_prefix="workflowinstances",
    steps={
        "create": (instances.own_by_workflow, keep_environment_refs_in_org),
        "update": (instances.keep_workflow_id, keep_environment_refs_in_org),
        "delete": (instances.refuse_default_instance_delete,),
    },
    references=(Reference("spec.workflow_id", "Workflow"),),
    indexes=(ENVIRONMENT_REFS,),
    api_version=API_VERSION,
    plural="workflowinstances",
    aliases=("workflow-instance", "workflow-instances", "wfi"),
    description="A deployment of a workflow with its environments.",
)

_RESPOND = (standard.publish, standard.redact, standard.respond)

WORKFLOW_EXECUTION = KindDeclaration(
    name="WorkflowExecution",
    resource=workflowexecution_pb2.WorkflowExecution,
    command_service=execution_service.DESCRIPTOR.services_by_name["WorkflowExecutionCommandController"],
    query_service=execution_service.DESCRIPTOR.services_by_name["WorkflowExecutionQueryController"],
    id_prefix="wfx",
    key_prefix="workflowexecutions",
    exported=False,  # a run-time record, not configuration
    steps={
        "create": (executions.resolve_workflow, executions.create_context, headroom.fits_content),
        "update": (executions.keep_spec, headroom.fits_content),
        "delete": (shred_owned_contexts,),
    },
    operations={
        "updateStatus": CustomOperation(
            steps=(
                standard.validate,
                standard.authorize,
                check_report,
                lifecycle.update_status(merge=merge_report),
                *_RESPOND,
            ),
            writes=True,
            access=Access.RUN,  # what a runner reports; editors cancel
        ),
        "cancel": CustomOperation(
            steps=(
                standard.validate,
                standard.authorize,
                lifecycle.cancel(id_field="id", on_cancel=executions.record_cancel_reason),
                *_RESPOND,
            ),
            writes=True,
        ),
        "listByWorkflow": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.list_by("workflow", "workflow_id"))
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
        IndexSpec("phase", executions.phase_values),
        IndexSpec("tag", executions.tag_values),
        IndexSpec("workflow", executions.workflow_values, org_scoped=False),
    ),
    list_filters={"phase": "phase", "tags": "tag"},
    redact=executions.hide_secrets,
    references=(
        Reference("spec.workflow_instance_id", "WorkflowInstance", live=lifecycle.live),
        Reference("spec.workflow_id", "Workflow", live=lifecycle.live),
    ),
    api_version=API_VERSION,
    plural="workflowexecutions",
    aliases=("workflow-execution", "workflow-executions", "wfx"),
    description="One run of a workflow instance, with its per-task statuses.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [WORKFLOW, WORKFLOW_INSTANCE, WORKFLOW_EXECUTION]
