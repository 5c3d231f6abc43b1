"""Builders shared by the workflow tests: valid workflows and their stubs."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from stigmer_core.api.agentic.workflow.v1 import service_pb2_grpc as workflow_grpc
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import service_pb2_grpc as execution_grpc
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import service_pb2_grpc as instance_grpc
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2


def document() -> workflow_pb2.WorkflowDocument:
    return workflow_pb2.WorkflowDocument(dsl="1.0.0", namespace="support", name="triage", version="0.1.0")


def task(name: str, kind: str = "set", then: str = "", **config: Any) -> workflow_pb2.WorkflowTask:
    found = workflow_pb2.WorkflowTask(name=name, kind=kind)
    found.task_config.update(config or {"value": name})
    if then:
        found.flow.then = then
    return found


def workflow(
    name: str = "Triage", *, tasks: list[workflow_pb2.WorkflowTask] | None = None, org: str = ""
) -> workflow_pb2.Workflow:
    spec = workflow_pb2.WorkflowSpec(description="routes tickets", document=document())
    spec.tasks.extend(tasks if tasks is not None else [task("fetch", "call", then="route"), task("route", then="end")])
    return workflow_pb2.Workflow(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org), spec=spec)


def instance(
    name: str, workflow_id: str, *, org: str = "", labels: dict[str, str] | None = None
) -> workflowinstance_pb2.WorkflowInstance:
    return workflowinstance_pb2.WorkflowInstance(
        metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org, labels=labels or {}),
        spec=workflowinstance_pb2.WorkflowInstanceSpec(workflow_id=workflow_id),
    )


class Stubs:
    """Workflow and WorkflowInstance stubs over one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.workflows = workflow_grpc.WorkflowCommandControllerStub(channel)
        self.workflow_query = workflow_grpc.WorkflowQueryControllerStub(channel)
        self.instances = instance_grpc.WorkflowInstanceCommandControllerStub(channel)
        self.instance_query = instance_grpc.WorkflowInstanceQueryControllerStub(channel)

    def get_instance(self, instance_id: str) -> workflowinstance_pb2.WorkflowInstance:
        return self.instance_query.get(workflowinstance_pb2.WorkflowInstanceId(value=instance_id))  # type: ignore[no-any-return]

    def delete_workflow(self, workflow_id: str) -> workflow_pb2.Workflow:
        return self.workflows.delete(workflow_pb2.WorkflowId(value=workflow_id))  # type: ignore[no-any-return]


def execution(
    name: str = "run",
    *,
    workflow_id: str = "",
    instance_id: str = "",
    tags: list[str] | None = None,
    runtime_env: dict[str, tuple[str, bool]] | None = None,
    org: str = "",
) -> workflowexecution_pb2.WorkflowExecution:
    found = workflowexecution_pb2.WorkflowExecution(
        metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org, tags=tags or []),
        spec=workflowexecution_pb2.WorkflowExecutionSpec(
            workflow_id=workflow_id, workflow_instance_id=instance_id, trigger_message="go"
        ),
    )
    for key, (value, secret) in (runtime_env or {}).items():
        found.spec.runtime_env[key].value = value
        found.spec.runtime_env[key].is_secret = secret
    return found


def report(
    phase: int = 0, *tasks: workflowexecution_pb2.WorkflowTaskStatus, **fields: Any
) -> workflowexecution_pb2.WorkflowExecutionStatus:
    status = workflowexecution_pb2.WorkflowExecutionStatus(phase=phase, **fields)  # type: ignore[arg-type]
    status.tasks.extend(tasks)
    return status


def task_status(name: str, phase: int = 0, **fields: Any) -> workflowexecution_pb2.WorkflowTaskStatus:
    return workflowexecution_pb2.WorkflowTaskStatus(task_name=name, phase=phase, **fields)  # type: ignore[arg-type]


class Executions:
    """WorkflowExecution stubs over one channel, with the request messages spelled out once."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.commands = execution_grpc.WorkflowExecutionCommandControllerStub(channel)
        self.queries = execution_grpc.WorkflowExecutionQueryControllerStub(channel)

    def create(self, resource: workflowexecution_pb2.WorkflowExecution) -> workflowexecution_pb2.WorkflowExecution:
        return self.commands.create(resource)  # type: ignore[no-any-return]

    def get(self, execution_id: str) -> workflowexecution_pb2.WorkflowExecution:
        return self.queries.get(workflowexecution_pb2.WorkflowExecutionId(value=execution_id))  # type: ignore[no-any-return]

    def delete(self, execution_id: str) -> workflowexecution_pb2.WorkflowExecution:
        return self.commands.delete(workflowexecution_pb2.WorkflowExecutionId(value=execution_id))  # type: ignore[no-any-return]

    def report(
        self, execution_id: str, status: workflowexecution_pb2.WorkflowExecutionStatus
    ) -> workflowexecution_pb2.WorkflowExecution:
        request = workflowexecution_pb2.WorkflowExecutionUpdateStatusInput(execution_id=execution_id, status=status)
        return self.commands.updateStatus(request)  # type: ignore[no-any-return]

    def cancel(self, execution_id: str, reason: str = "") -> workflowexecution_pb2.WorkflowExecution:
        request = workflowexecution_pb2.CancelWorkflowExecutionInput(id=execution_id, reason=reason)
        return self.commands.cancel(request)  # type: ignore[no-any-return]

    def subscribe(self, execution_id: str, after: int = 0, timeout: float = 30) -> Any:
        request = workflowexecution_pb2.SubscribeWorkflowExecutionRequest(
            execution_id=execution_id, after_revision=after
        )
        return self.queries.subscribe(request, timeout=timeout)

    def list_all(self, request: Message, method: str = "list") -> list[workflowexecution_pb2.WorkflowExecution]:
        """Every page of ``list`` or ``listByWorkflow``; the page size comes from the request."""
        found: list[workflowexecution_pb2.WorkflowExecution] = []
        pages = 0
        while True:
            page = getattr(self.queries, method)(request)
            found.extend(page.entries)
            pages += 1
            assert pages < 1000, "pagination does not end"
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token  # type: ignore[attr-defined]
