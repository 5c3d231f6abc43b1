"""Structural rules of a workflow spec, checked as a whole.

protovalidate rules in the proto only bound sizes: a rule there cannot see a
task's siblings (unique names, flow targets), and a request that broke both
kinds of rule would learn of them in two round trips. Here every rule runs
and every broken field is reported in one ``InvalidArgument``, each under a
path a client can point at (``spec.tasks[2].flow.then``).

Task kinds are the task types of the Serverless Workflow DSL 1.0
(https://github.com/serverlessworkflow/specification/blob/main/dsl-reference.md):
``call`` (HTTP, gRPC, OpenAPI, AsyncAPI or a function), ``do`` (a sequence),
``emit`` (an event), ``for`` (a loop), ``fork`` (parallel branches),
``listen`` (wait for events), ``raise`` (an error), ``run`` (a container,
script, shell command or sub-workflow), ``set`` (context data), ``switch``
(a branch), ``try`` (error handling) and ``wait`` (a delay). A task's
``task_config`` is that kind's body as the DSL spells it; the runner
interprets it, so it is not checked here.
"""

from __future__ import annotations

import re

from stigmer_core import FieldViolation, InvalidArgument, Phase, RequestContext, step
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2

TASK_KINDS = frozenset({"call", "do", "emit", "for", "fork", "listen", "raise", "run", "set", "switch", "try", "wait"})
"""The task kinds a workflow may use (the Serverless Workflow DSL's)."""

FLOW_DIRECTIVES = frozenset({"continue", "end", "exit"})
"""What a flow ``then`` may name besides a task: the next task, or stop."""

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_DSL = re.compile(r"^1\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KINDS_TEXT = ", ".join(sorted(TASK_KINDS))


def _document(document: workflow_pb2.WorkflowDocument, path: str) -> list[FieldViolation]:
    found = []
    if not document.dsl:
        found.append(FieldViolation(f"{path}.dsl", "is required (the DSL version, e.g. '1.0.0')"))
    elif not _DSL.match(document.dsl):
        found.append(FieldViolation(f"{path}.dsl", f"'{document.dsl}' is not a 1.x.y DSL version"))
    for field in ("namespace", "name"):
        value = getattr(document, field)
        if not value:
            found.append(FieldViolation(f"{path}.{field}", "is required"))
        elif not _HOSTNAME.match(value):
            found.append(
                FieldViolation(f"{path}.{field}", f"'{value}' must be lowercase letters, digits and inner dashes")
            )
    if not document.version:
        found.append(FieldViolation(f"{path}.version", "is required (semver, e.g. '0.1.0')"))
    elif not _SEMVER.match(document.version):
        found.append(FieldViolation(f"{path}.version", f"'{document.version}' is not a semantic version"))
    return found


def _task(task: workflow_pb2.WorkflowTask, path: str, first_index: dict[str, int], index: int) -> list[FieldViolation]:
    found = []
    if not task.name:
        found.append(FieldViolation(f"{path}.name", "is required"))
    elif task.name in FLOW_DIRECTIVES:
        found.append(FieldViolation(f"{path}.name", f"'{task.name}' is reserved for flow directives"))
    elif first_index[task.name] != index:
        found.append(
            FieldViolation(f"{path}.name", f"'{task.name}' is already the name of spec.tasks[{first_index[task.name]}]")
        )
    if not task.kind:
        found.append(FieldViolation(f"{path}.kind", f"is required (one of: {_KINDS_TEXT})"))
    elif task.kind not in TASK_KINDS:
        found.append(FieldViolation(f"{path}.kind", f"'{task.kind}' is not a task kind (one of: {_KINDS_TEXT})"))
    then = task.flow.then
    if then and then not in FLOW_DIRECTIVES and then not in first_index:
        found.append(
            FieldViolation(f"{path}.flow.then", f"'{then}' names no task of this workflow (nor continue, end, exit)")
        )
    if task.HasField("export") and not getattr(task.export, "as"):
        found.append(FieldViolation(f"{path}.export.as", "is required when export is set"))
    return found


def spec_violations(spec: workflow_pb2.WorkflowSpec, path: str = "spec") -> list[FieldViolation]:
    """Every structural rule ``spec`` breaks, in field order."""
    found = []
    if spec.HasField("document"):
        found += _document(spec.document, f"{path}.document")
    else:
        found.append(FieldViolation(f"{path}.document", "is required (dsl, namespace, name, version)"))
    if not spec.tasks:
        found.append(FieldViolation(f"{path}.tasks", "needs at least one task"))
    first_index: dict[str, int] = {}
    for index, task in enumerate(spec.tasks):
        if task.name:
            first_index.setdefault(task.name, index)
    for index, task in enumerate(spec.tasks):
        found += _task(task, f"{path}.tasks[{index}]", first_index, index)
    return found


def check_spec(spec: workflow_pb2.WorkflowSpec, path: str = "spec") -> None:
    """Raise one InvalidArgument naming every broken field, if any."""
    found = spec_violations(spec, path)
    if found:
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise InvalidArgument(f"invalid workflow: {summary}{more}", found)


@step(Phase.VALIDATE)
def validate_workflow(ctx: RequestContext) -> None:
    """Before the transaction: a broken workflow never holds up the group commit."""
    workflow = ctx.request
    assert isinstance(workflow, workflow_pb2.Workflow)
    check_spec(workflow.spec)
