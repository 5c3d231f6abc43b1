"""Per-task statuses of a WorkflowExecution, under the execution lifecycle.

A task moves exactly as an execution does (``lifecycle.check_transition``):
one state machine for both levels, so a client reading either knows the
rules. Reports merge by task name, because a runner knows names, not
positions, and may report tasks nested in a ``do``/``for``/``fork``/``try``
that the workflow's top-level list does not name (those are appended).
Reporting a task again in the phase it is in is allowed (a runner may
resend its whole task list), but a finished task's result is final.

A task's refusal has reasons of its own (``TASK_ENDED``,
``TASK_ILLEGAL_TRANSITION``, ``RUN_NOT_STARTED``), each naming the task:
the run-level ``RUN_ENDED`` tells a runner to stop, and a stale task
state it resends must not make it abandon a live run. When the run ends,
however it ends, its unfinished tasks end with it (CANCELLED): a task of
an ended run will not move again, and a task left IN_PROGRESS would say
something runs that does not.
"""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from stigmer_core import FailedPrecondition, FieldViolation, InvalidArgument, Phase, RequestContext, step
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_plugins import lifecycle
from stigmer_plugins.lifecycle import check_transition
from stigmer_plugins.phases import CANCELLED, IN_PROGRESS, PENDING, is_terminal, phase_name

Status = workflowexecution_pb2.WorkflowExecutionStatus
TaskStatus = workflowexecution_pb2.WorkflowTaskStatus


MAX_TASKS = lifecycle.max_items(Status.DESCRIPTOR.fields_by_name["tasks"]) or 1 << 31
"""The status's own rule on ``tasks``."""


def _now() -> Timestamp:
    now = Timestamp()
    now.GetCurrentTime()
    return now


def _enter(task: TaskStatus, phase: int, now: Timestamp) -> None:
    if phase == IN_PROGRESS and not task.HasField("started_at"):
        task.started_at.CopyFrom(now)
    if is_terminal(phase) and not task.HasField("completed_at"):
        task.completed_at.CopyFrom(now)
    task.phase = phase  # type: ignore[assignment]


def _changes_result(task: TaskStatus, reported: TaskStatus) -> bool:
    return (reported.HasField("error") and reported.error != task.error) or (
        reported.HasField("output") and reported.output != task.output
    )


def _check_move(task: TaskStatus, requested: int, what: str) -> None:
    """The run's state machine, refused in the task's own words: ``RUN_ENDED`` and
    ``ILLEGAL_TRANSITION`` speak of the run, and a runner stops a run on ``RUN_ENDED``."""
    try:
        check_transition(task.phase, requested, what=what)
    except FailedPrecondition as refused:
        raise FailedPrecondition(
            refused.message + ("; the workflow execution goes on" if is_terminal(task.phase) else ""),
            reason="TASK_ENDED" if is_terminal(task.phase) else "TASK_ILLEGAL_TRANSITION",
            metadata={"task": task.task_name, "phase": phase_name(task.phase), "requestedPhase": phase_name(requested)},
        ) from None


def _apply(task: TaskStatus, reported: TaskStatus, execution_phase: int, now: Timestamp) -> None:
    what = f"task '{task.task_name}'"
    requested = reported.phase or task.phase
    if requested == task.phase:
        if is_terminal(task.phase) and _changes_result(task, reported):
            raise FailedPrecondition(
                f"{what} is {phase_name(task.phase)}, a terminal phase; its result is final "
                "(the workflow execution goes on)",
                reason="TASK_ENDED",
                metadata={"task": task.task_name, "phase": phase_name(task.phase)},
            )
    else:
        if execution_phase == PENDING:
            raise FailedPrecondition(
                f"{what} cannot move to {phase_name(requested)} while the workflow execution is "
                f"{phase_name(PENDING)}; report the execution {phase_name(IN_PROGRESS)} first (or in the same report)",
                reason="RUN_NOT_STARTED",
                metadata={"task": task.task_name, "requestedPhase": phase_name(requested)},
            )
        _check_move(task, requested, what)
        _enter(task, requested, now)
    if reported.HasField("error"):
        task.error.CopyFrom(reported.error)
    if reported.HasField("output"):
        task.output.CopyFrom(reported.output)


def close_open_tasks(status: Status, now: Timestamp | None = None) -> None:
    """An ended run (cancelled, completed or failed) cancels every task that had not finished."""
    now = now or _now()
    for task in status.tasks:
        if not is_terminal(task.phase):
            _enter(task, CANCELLED, now)


def merge_report(report: Message, status: Message) -> None:
    """What a runner may report: task phases and results, output, error.

    Called by ``lifecycle.update_status`` after the execution's own phase
    has moved, so a report can start the execution and its first task at once,
    or finish its last task and end it; the tasks still open when it ends are
    CANCELLED, as a cancel does.
    A report that would add tasks past what the status may hold is refused
    whole: the stored execution must stay valid under its own rules, or
    every later update of it would fail validation.
    """
    assert isinstance(report, Status) and isinstance(status, Status)
    now = _now()
    by_name = {task.task_name: task for task in status.tasks}
    added = len({t.task_name for t in report.tasks if t.task_name not in by_name})
    if len(status.tasks) + added > MAX_TASKS:
        raise FailedPrecondition(
            f"the report adds {added} tasks to the {len(status.tasks)} the execution has; its status holds "
            f"at most {MAX_TASKS} (status.tasks): end the run, or start another",
            reason="REPORT_LIMIT",
            metadata={"field": "status.tasks", "limit": MAX_TASKS},
        )
    for reported in report.tasks:
        task = by_name.get(reported.task_name)
        if task is None:
            task = status.tasks.add(task_name=reported.task_name, task_kind=reported.task_kind, phase=PENDING)
            by_name[task.task_name] = task
        _apply(task, reported, status.phase, now)
    if report.HasField("output"):
        status.output.CopyFrom(report.output)
    if report.HasField("error"):
        status.error.CopyFrom(report.error)
    if is_terminal(status.phase):
        close_open_tasks(status, now)


@step(Phase.VALIDATE)
def check_report(ctx: RequestContext) -> None:
    """A report names each task once: two entries for one task have no order to merge in."""
    request = ctx.request
    assert isinstance(request, workflowexecution_pb2.WorkflowExecutionUpdateStatusInput)
    first: dict[str, int] = {}
    found = []
    for index, task in enumerate(request.status.tasks):
        if task.task_name in first:
            found.append(
                FieldViolation(
                    f"status.tasks[{index}].task_name",
                    f"'{task.task_name}' is already reported in status.tasks[{first[task.task_name]}]",
                )
            )
        first.setdefault(task.task_name, index)
    if found:
        raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in found), found)
