"""The stateful contract for WorkflowInstance, on the in-process channel and over the network.

An instance needs a workflow of its own org, so ``prepare`` creates one
parent per org (and keeps using it: an instance's workflow is immutable, so
an update must name the same one). Each parent brings its default instance
along; those are recorded in ``foreign`` and left out of list comparisons.
"""

from __future__ import annotations

from google.protobuf.message import Message

from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.testing import KindContract, contract_tests
from tests.property.environment_refs import keep_in_org


class WorkflowInstanceContract(KindContract):
    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, str] = {}

    def _parent(self, org: str) -> str:
        if org not in self.parents:
            parent = workflow_pb2.Workflow()
            parent.metadata.name = f"parent {org}"
            parent.metadata.org = org
            parent.spec.document.dsl = "1.0.0"
            parent.spec.document.namespace = "contract"
            parent.spec.document.name = "parent"
            parent.spec.document.version = "1.0.0"
            parent.spec.tasks.add(name="only", kind="set")
            created = self.client_for("Workflow").create(parent)
            assert isinstance(created, workflow_pb2.Workflow)
            self.parents[org] = created.metadata.id
            self.foreign.add(created.status.default_instance_id)
        return self.parents[org]

    def prepare(self, resource: Message, org: str) -> None:
        assert isinstance(resource, workflowinstance_pb2.WorkflowInstance)
        resource.spec.workflow_id = self._parent(org)
        keep_in_org(resource, org)


TestWorkflowInstanceInProcess, TestWorkflowInstanceNetwork = contract_tests(
    "WorkflowInstance", base=WorkflowInstanceContract
)
