"""The stateful contract for WorkflowExecution, on the in-process channel and over the network.

An execution's spec is its run's input and is immutable after create, while
the contract updates objects with freshly drawn specs. So ``prepare`` gives
every execution of an org one canonical spec: both ids of that org's parent
workflow (created once per org, with its default instance) and a fixed
trigger message. The contract then checks create, apply, metadata updates,
delete, get, getByReference and list as for any kind; the lifecycle rpcs
(updateStatus, cancel, listByWorkflow, subscribe) are tested directly in
tests/test_workflowexecution*.py.
"""

from __future__ import annotations

from google.protobuf.message import Message

from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_core.testing import KindContract, contract_tests


class WorkflowExecutionContract(KindContract):
    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, workflow_pb2.Workflow] = {}

    def _parent(self, org: str) -> workflow_pb2.Workflow:
        if org not in self.parents:
            parent = workflow_pb2.Workflow()
            parent.metadata.name = f"parent {org}"
            parent.metadata.org = org
            parent.spec.document.dsl = "1.0.0"
            parent.spec.document.namespace = "contract"
            parent.spec.document.name = "parent"
            parent.spec.document.version = "1.0.0"
            parent.spec.tasks.add(name="first", kind="call").flow.then = "second"
            parent.spec.tasks.add(name="second", kind="set")
            created = self.client_for("Workflow").create(parent)
            assert isinstance(created, workflow_pb2.Workflow)
            self.parents[org] = created
        return self.parents[org]

    def prepare(self, resource: Message, org: str) -> None:
        assert isinstance(resource, workflowexecution_pb2.WorkflowExecution)
        parent = self._parent(org)
        resource.spec.Clear()
        resource.spec.workflow_id = parent.metadata.id
        resource.spec.workflow_instance_id = parent.status.default_instance_id
        resource.spec.trigger_message = "contract run"


TestWorkflowExecutionInProcess, TestWorkflowExecutionNetwork = contract_tests(
    "WorkflowExecution", base=WorkflowExecutionContract
)
