"""The stateful contract for Workflow, on the in-process channel and over the network.

The spec strategy draws tasks from the proto's size rules alone, which a
workflow's structural rules reject (unknown kinds, dangling flow targets),
so ``prepare`` repairs each drawn spec into a valid one while keeping what
it can of the draw (descriptions, task configs, exports, names that are
already valid). Each workflow's default instance is another kind, so no
list here ever sees it.
"""

from __future__ import annotations

from google.protobuf.message import Message

from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.testing import KindContract, contract_tests
from stigmer_plugins.workflow_validation import FLOW_DIRECTIVES, TASK_KINDS, spec_violations

KINDS = sorted(TASK_KINDS)


def valid_spec(spec: workflow_pb2.WorkflowSpec) -> None:
    """Turn a drawn spec into one the workflow rules accept, in place."""
    spec.document.dsl = "1.0.0"
    spec.document.namespace = "contract"
    spec.document.name = "flow"
    spec.document.version = "1.2.3"
    if not spec.tasks:
        spec.tasks.add(name="only", kind="set")
    seen: set[str] = set()
    for index, task in enumerate(spec.tasks):
        if not task.name or task.name in seen or task.name in FLOW_DIRECTIVES:
            task.name = f"task-{index}"
        seen.add(task.name)
        if task.kind not in TASK_KINDS:
            task.kind = KINDS[index % len(KINDS)]
        if task.HasField("export") and not getattr(task.export, "as"):
            setattr(task.export, "as", "${ . }")
    names = [t.name for t in spec.tasks]
    for index, task in enumerate(spec.tasks):
        if task.flow.then and task.flow.then not in seen and task.flow.then not in FLOW_DIRECTIVES:
            task.flow.then = names[(index + 1) % len(names)]
    assert spec_violations(spec) == []


class WorkflowContract(KindContract):
    def prepare(self, resource: Message, org: str) -> None:
        assert isinstance(resource, workflow_pb2.Workflow)
        valid_spec(resource.spec)


TestWorkflowInProcess, TestWorkflowNetwork = contract_tests("Workflow", base=WorkflowContract)
