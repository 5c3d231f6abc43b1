"""WorkflowExecution's lifecycle: the state machine of runs and tasks, cancel, subscribe — on both paths."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from stigmer_core import from_rpc_error
from stigmer_core.api.agentic.execution.v1 import execution_pb2
from stigmer_core.api.agentic.executioncontext.v1 import executioncontext_pb2
from stigmer_core.api.agentic.executioncontext.v1 import service_pb2_grpc as context_grpc
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_plugins.lifecycle import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, PENDING, phase_name
from stigmer_plugins.secrets import REDACTED
from tests.workflow_helpers import Executions, Stubs, execution, report, task_status, workflow

UNSET = 0
PHASES = [PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED]
TERMINAL = {COMPLETED, FAILED, CANCELLED}
RUN_MOVES: dict[int, set[int]] = {
    PENDING: {UNSET, PENDING, IN_PROGRESS, FAILED, CANCELLED},
    IN_PROGRESS: {UNSET, IN_PROGRESS, COMPLETED, FAILED, CANCELLED},
    COMPLETED: set(),
    FAILED: set(),
    CANCELLED: set(),
}
"""Every report a run accepts, by its phase; a terminal run accepts none."""
TASK_MOVES: dict[int, set[int]] = {
    PENDING: {UNSET, PENDING, IN_PROGRESS, FAILED, CANCELLED},
    IN_PROGRESS: {UNSET, IN_PROGRESS, COMPLETED, FAILED, CANCELLED},
    COMPLETED: {UNSET, COMPLETED},
    FAILED: {UNSET, FAILED},
    CANCELLED: {UNSET, CANCELLED},
}
"""A task moves like a run, but its unchanged phase may be resent (a runner resending its task list)."""
PAIRS = [(a, b) for a in PHASES for b in [UNSET, *PHASES]]
IDS = [f"{phase_name(a)}->{phase_name(b) if b else 'unset'}" for a, b in PAIRS]


def _name(phase: int) -> str:
    return phase_name(phase).removeprefix("EXECUTION_")


def _started(runs: Executions, stubs: Stubs) -> workflowexecution_pb2.WorkflowExecution:
    wf = stubs.workflows.create(workflow())
    return runs.create(execution("run", workflow_id=wf.metadata.id))


def _run_in(runs: Executions, run: workflowexecution_pb2.WorkflowExecution, phase: int) -> None:
    """Bring a PENDING run to ``phase`` by legal moves."""
    run_id = run.metadata.id
    if phase == IN_PROGRESS:
        runs.report(run_id, report(IN_PROGRESS))
    elif phase == COMPLETED:
        runs.report(run_id, report(IN_PROGRESS))
        runs.report(run_id, report(COMPLETED))
    elif phase == FAILED:
        runs.report(run_id, report(FAILED))
    elif phase == CANCELLED:
        runs.cancel(run_id)


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=IDS)
def test_run_state_machine(stigmer_channel: grpc.Channel, current: int, requested: int) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    _run_in(runs, run, current)
    before = runs.get(run.metadata.id)
    assert before.status.phase == current
    if requested in RUN_MOVES[current]:
        after = runs.report(run.metadata.id, report(requested))
        assert after.status.phase == (requested or current)
        assert after.status.HasField("started_at") == (IN_PROGRESS in (current, requested) or current == COMPLETED)
        assert after.status.HasField("completed_at") == (after.status.phase in TERMINAL)
        return
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(requested))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert phase_name(current) in err.value.details()
    assert runs.get(run.metadata.id) == before


def _task_in(runs: Executions, run_id: str, phase: int) -> None:
    if phase in (IN_PROGRESS, COMPLETED):
        runs.report(run_id, report(UNSET, task_status("fetch", IN_PROGRESS)))
    if phase in (COMPLETED, FAILED, CANCELLED):
        runs.report(run_id, report(UNSET, task_status("fetch", phase)))


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=IDS)
def test_task_state_machine(stigmer_channel: grpc.Channel, current: int, requested: int) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    runs.report(run.metadata.id, report(IN_PROGRESS))
    _task_in(runs, run.metadata.id, current)
    before = runs.get(run.metadata.id)
    assert before.status.tasks[0].task_name == "fetch" and before.status.tasks[0].phase == current
    if requested in TASK_MOVES[current]:
        after = runs.report(run.metadata.id, report(UNSET, task_status("fetch", requested)))
        fetch = after.status.tasks[0]
        assert fetch.phase == (requested or current)
        assert fetch.HasField("started_at") == (IN_PROGRESS in (current, requested) or current == COMPLETED)
        assert fetch.HasField("completed_at") == (fetch.phase in TERMINAL)
        assert after.status.tasks[1] == before.status.tasks[1]  # the other task is untouched
        return
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(UNSET, task_status("fetch", requested)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "task 'fetch'" in err.value.details()
    assert runs.get(run.metadata.id) == before


def test_tasks_move_only_once_the_run_has_started(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(UNSET, task_status("fetch", IN_PROGRESS)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EXECUTION_PENDING" in err.value.details()
    both = runs.report(run.metadata.id, report(IN_PROGRESS, task_status("fetch", IN_PROGRESS)))
    assert both.status.phase == IN_PROGRESS and both.status.tasks[0].phase == IN_PROGRESS


def test_reports_merge_by_task_name(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    out = Struct()
    out.update({"tickets": 3})
    runner_time = task_status("route").started_at
    runner_time.seconds = 1
    started = runs.report(
        run.metadata.id,
        report(
            IN_PROGRESS,
            task_status("route", IN_PROGRESS, started_at=runner_time),
            task_status("route.branch-a", IN_PROGRESS, task_kind="call"),
        ),
    )
    assert [(t.task_name, t.task_kind, _name(t.phase)) for t in started.status.tasks] == [
        ("fetch", "call", "PENDING"),
        ("route", "set", "IN_PROGRESS"),
        ("route.branch-a", "call", "IN_PROGRESS"),  # a nested task the top-level list does not name
    ]
    assert started.status.tasks[1].started_at.seconds > 1  # the server's clock, not the runner's
    done = runs.report(run.metadata.id, report(UNSET, task_status("route", COMPLETED, output=out)))
    assert done.status.tasks[1].output == out and done.status.tasks[1].phase == COMPLETED
    # resending the finished task as it is changes nothing; changing its result is refused
    again = runs.report(run.metadata.id, report(UNSET, task_status("route", COMPLETED, output=out)))
    assert again.metadata.resource_version == done.metadata.resource_version
    other = Struct()
    other.update({"tickets": 4})
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(UNSET, task_status("route", COMPLETED, output=other)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "final" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(UNSET, task_status("fetch", IN_PROGRESS), task_status("fetch", FAILED)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(err.value).violations] == ["status.tasks[1].task_name"]  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        runs.report(run.metadata.id, report(UNSET, task_status("")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        runs.report("wfx-01arz3ndektsv4rrffq69g5fav", report(IN_PROGRESS))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    contexts = context_grpc.ExecutionContextQueryControllerStub(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    pending = runs.create(execution("pending", workflow_id=wf.metadata.id))
    running = runs.create(execution("running", workflow_id=wf.metadata.id, runtime_env={"T": ("s3cr3t", True)}))
    runs.report(running.metadata.id, report(IN_PROGRESS, task_status("fetch", IN_PROGRESS)))
    runs.report(running.metadata.id, report(UNSET, task_status("fetch", COMPLETED)))
    runs.report(running.metadata.id, report(UNSET, task_status("route", IN_PROGRESS)))
    cancelled = runs.cancel(running.metadata.id, "operator stopped it")
    assert cancelled.status.phase == CANCELLED and cancelled.status.HasField("completed_at")
    assert [_name(t.phase) for t in cancelled.status.tasks] == ["COMPLETED", "CANCELLED"]
    assert all(t.HasField("completed_at") for t in cancelled.status.tasks)
    assert (cancelled.status.error.code, cancelled.status.error.message) == ("CANCELLED", "operator stopped it")
    assert runs.cancel(running.metadata.id, "again") == cancelled  # a retried cancel changes nothing
    context = contexts.list(executioncontext_pb2.ListExecutionContextsRequest(execution_id=running.metadata.id))
    got = contexts.get(executioncontext_pb2.ExecutionContextId(value=context.entries[0].metadata.id))
    assert got.spec.data["T"].value == REDACTED  # the run is over: its secrets are gone
    from_pending = runs.cancel(pending.metadata.id)
    assert from_pending.status.phase == CANCELLED and not from_pending.status.HasField("error")
    assert [_name(t.phase) for t in from_pending.status.tasks] == ["CANCELLED", "CANCELLED"]
    done = runs.create(execution("done", workflow_id=wf.metadata.id))
    _run_in(runs, done, COMPLETED)
    failed = runs.create(execution("failed", workflow_id=wf.metadata.id))
    _run_in(runs, failed, FAILED)
    for ended in (done, failed):
        with pytest.raises(grpc.RpcError) as err:
            runs.cancel(ended.metadata.id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        runs.cancel("wfx-01arz3ndektsv4rrffq69g5fav")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


STEPS = 25


def _drive(runs: Executions, run_id: str, errors: list[BaseException]) -> None:
    """A runner's reports: start, STEPS progress outputs, finish the task, complete."""
    try:
        runs.report(run_id, report(IN_PROGRESS, task_status("fetch", IN_PROGRESS)))
        for n in range(STEPS):
            progress = Struct()
            progress.update({"n": n})
            runs.report(run_id, report(UNSET, task_status("fetch", output=progress)))
        runs.report(run_id, report(UNSET, task_status("fetch", COMPLETED)))
        runs.report(run_id, report(COMPLETED))
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def _check_stream(states: list[workflowexecution_pb2.WorkflowExecution]) -> None:
    """The states after the first: every report, once, in order."""
    assert len(states) == STEPS + 3, [s.status.phase for s in states]
    assert states[0].status.phase == IN_PROGRESS and states[0].status.tasks[0].phase == IN_PROGRESS
    assert [s.status.tasks[0].output["n"] for s in states[1 : STEPS + 1]] == list(range(STEPS))
    assert states[STEPS + 1].status.tasks[0].phase == COMPLETED
    assert states[-1].status.phase == COMPLETED
    versions = [s.metadata.resource_version for s in states]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def _drain(stream: Any, within: float = 10) -> list[workflowexecution_pb2.WorkflowExecution]:
    """Read a stream that must end by itself soon (the in-process channel has no deadlines)."""
    found: list[workflowexecution_pb2.WorkflowExecution] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            found.extend(stream)
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=within)
    assert not reader.is_alive(), "the stream did not end"
    if failure:
        raise failure[0]
    return found


def test_subscribe_streams_every_state_in_order_and_resumes(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    watched = [runs.create(execution(f"run {i}", workflow_id=wf.metadata.id)) for i in range(2)]
    streams = [runs.subscribe(run.metadata.id) for run in watched]
    for stream, run in zip(streams, watched, strict=True):
        assert next(stream) == run  # the state as it is now, first
    seen: list[list[workflowexecution_pb2.WorkflowExecution]] = [[], []]
    errors: list[BaseException] = []

    def collect(index: int) -> None:
        try:
            seen[index].extend(streams[index])  # ends by itself after the terminal phase
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=_drive, args=(runs, run.metadata.id, errors)) for run in watched]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for index, run in enumerate(watched):
        _check_stream(seen[index])
        assert seen[index][-1] == runs.get(run.metadata.id)
    # a reconnecting subscriber resumes after the last state it saw, and gets exactly the rest
    states = seen[0]
    for cut in (0, 7, STEPS):
        resumed = _drain(runs.subscribe(watched[0].metadata.id, after=states[cut].metadata.resource_version))
        assert resumed == states[cut + 1 :]
    # resuming after the end is an empty stream, not a wait for changes that will never come
    assert _drain(runs.subscribe(watched[0].metadata.id, after=states[-1].metadata.resource_version)) == []
    # a subscriber to a run that has ended gets its final state and nothing more
    assert _drain(runs.subscribe(watched[1].metadata.id)) == [seen[1][-1]]
    with pytest.raises(grpc.RpcError) as err:
        _drain(runs.subscribe("wfx-01arz3ndektsv4rrffq69g5fav"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_subscribe_ends_when_the_run_is_deleted(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    run = runs.create(execution("short lived", workflow_id=wf.metadata.id))
    stream = runs.subscribe(run.metadata.id, timeout=30)
    assert next(stream) == run
    runs.report(run.metadata.id, report(IN_PROGRESS))
    runs.delete(run.metadata.id)
    rest = _drain(stream)
    assert [s.status.phase for s in rest] == [IN_PROGRESS]


def _refusal(call: Any) -> Any:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    return from_rpc_error(err.value)


def test_a_task_refusal_names_the_task_and_is_no_run_refusal(stigmer_channel: grpc.Channel) -> None:
    """A finished task resent IN_PROGRESS was refused as RUN_ENDED, which tells a runner its run has
    ended, though the run went on: the runner abandoned a live run."""
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    refused = _refusal(lambda: runs.report(run.metadata.id, report(UNSET, task_status("fetch", IN_PROGRESS))))
    assert (refused.reason, refused.metadata) == (
        "RUN_NOT_STARTED",
        {"task": "fetch", "requestedPhase": "EXECUTION_IN_PROGRESS"},
    )
    runs.report(run.metadata.id, report(IN_PROGRESS, task_status("fetch", IN_PROGRESS)))
    runs.report(run.metadata.id, report(UNSET, task_status("fetch", COMPLETED)))
    refused = _refusal(lambda: runs.report(run.metadata.id, report(UNSET, task_status("fetch", IN_PROGRESS))))
    assert refused.reason == "TASK_ENDED"
    assert refused.metadata == {
        "task": "fetch",
        "phase": "EXECUTION_COMPLETED",
        "requestedPhase": "EXECUTION_IN_PROGRESS",
    }
    out = Struct()
    out.update({"changed": True})
    refused = _refusal(lambda: runs.report(run.metadata.id, report(UNSET, task_status("fetch", COMPLETED, output=out))))
    assert (refused.reason, refused.metadata) == ("TASK_ENDED", {"task": "fetch", "phase": "EXECUTION_COMPLETED"})
    runs.report(run.metadata.id, report(UNSET, task_status("route", IN_PROGRESS)))
    refused = _refusal(lambda: runs.report(run.metadata.id, report(UNSET, task_status("route", PENDING))))
    assert refused.reason == "TASK_ILLEGAL_TRANSITION"
    assert refused.metadata == {
        "task": "route",
        "phase": "EXECUTION_IN_PROGRESS",
        "requestedPhase": "EXECUTION_PENDING",
    }
    assert runs.get(run.metadata.id).status.phase == IN_PROGRESS  # the run is live, and says so


@pytest.mark.parametrize("ending", [COMPLETED, FAILED, CANCELLED], ids=_name)
def test_a_run_that_ends_ends_its_open_tasks(stigmer_channel: grpc.Channel, ending: int) -> None:
    """A run reported COMPLETED or FAILED kept its unfinished tasks IN_PROGRESS (or PENDING) for good;
    only a cancel closed them. Ended any way, the tasks it left open are CANCELLED."""
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    run = runs.create(execution("three", workflow_id=wf.metadata.id))
    runs.report(run.metadata.id, report(IN_PROGRESS, task_status("fetch", IN_PROGRESS)))
    runs.report(run.metadata.id, report(UNSET, task_status("fetch", COMPLETED), task_status("nested", IN_PROGRESS)))
    if ending == CANCELLED:
        ended = runs.cancel(run.metadata.id)
    else:  # the last report ends a task as it ends the run: that task keeps its own phase
        ended = runs.report(run.metadata.id, report(ending, task_status("nested", FAILED)))
    tasks = {t.task_name: _name(t.phase) for t in ended.status.tasks}
    nested = "CANCELLED" if ending == CANCELLED else "FAILED"
    assert tasks == {"fetch": "COMPLETED", "route": "CANCELLED", "nested": nested}
    assert all(t.HasField("completed_at") for t in ended.status.tasks)
    assert runs.get(run.metadata.id) == ended


def test_a_report_writes_into_a_run_only_once_it_is_claimed(stigmer_channel: grpc.Channel) -> None:
    """Any runner token of the org may end a PENDING run it will not run, but a task list or an
    output it sent with that end (or with no phase) was kept: a run nobody ran held made-up results."""
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = _started(runs, stubs)
    before = runs.get(run.metadata.id)
    forged = Struct()
    forged.update({"forged": True})
    for phase in (UNSET, PENDING, FAILED):
        forging = report(phase, task_status("zzz"), output=forged)
        refused = _refusal(lambda: runs.report(run.metadata.id, forging))  # noqa: B023 (called at once)
        assert (refused.reason, refused.metadata["fields"]) == ("RUN_NOT_CLAIMED", "output,tasks")
        assert runs.get(run.metadata.id) == before, "a refused report writes nothing"
    ended = runs.report(run.metadata.id, report(FAILED, error=execution_pb2.ExecutionError(message="no runner")))
    assert ended.status.phase == FAILED and ended.status.error.message == "no runner"
    assert not ended.status.HasField("output") and "zzz" not in [t.task_name for t in ended.status.tasks]
