"""The execution lifecycle: every move between phases, legal or not, in the
state machine itself and through updateStatus / cancel on both paths."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, FailedPrecondition
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.execution.v1 import execution_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2 as wx
from stigmer_plugins import lifecycle, phases
from tests.agent_execution_support import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PENDING,
    Kinds,
    code_of,
    details_of,
    drive_to,
)
from tests.workflow_helpers import Executions, Stubs, execution, workflow

PHASES = [v.number for v in execution_pb2.ExecutionPhase.DESCRIPTOR.values]
LEGAL = {
    (PENDING, PENDING),
    (PENDING, IN_PROGRESS),
    (PENDING, FAILED),
    (PENDING, CANCELLED),
    (IN_PROGRESS, IN_PROGRESS),
    (IN_PROGRESS, COMPLETED),
    (IN_PROGRESS, FAILED),
    (IN_PROGRESS, CANCELLED),
}
ALL_PAIRS = list(itertools.product(PHASES, PHASES))


def _name(phase: int) -> str:
    return phases.phase_name(phase)


@pytest.mark.parametrize(("current", "requested"), ALL_PAIRS, ids=[f"{_name(a)}->{_name(b)}" for a, b in ALL_PAIRS])
def test_state_machine(current: int, requested: int) -> None:
    if (current, requested) in LEGAL:
        lifecycle.check_transition(current, requested, what="agent execution 'x'")
        return
    with pytest.raises(FailedPrecondition) as err:
        lifecycle.check_transition(current, requested, what="agent execution 'x'")
    assert _name(current) in err.value.message and _name(requested) in err.value.message
    assert "agent execution 'x'" in err.value.message


def test_terminal_phases() -> None:
    assert {COMPLETED, FAILED, CANCELLED} == phases.TERMINAL
    assert [p for p in PHASES if phases.is_terminal(p)] == [COMPLETED, FAILED, CANCELLED]


REACHABLE = [PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED]
REPORTS = [(a, b) for a in REACHABLE for b in PHASES]


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


@pytest.mark.parametrize(("current", "reported"), REPORTS, ids=[f"{_name(a)}->{_name(b)}" for a, b in REPORTS])
def test_update_status_enforces_the_lifecycle(kinds: Kinds, current: int, reported: int) -> None:
    """A report with no phase (UNSPECIFIED) keeps the current one, which is legal only while it is not terminal."""
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    drive_to(kinds, execution.metadata.id, current)
    before = kinds.executions.get(execution.metadata.id)
    assert before.status.phase == current
    effective = reported or current
    if (current, effective) in LEGAL and current == PENDING and effective != IN_PROGRESS:
        # any runner token of the org may end a run nobody claimed, or leave it as it is, but only a
        # claim lets a report write into it: "progress" would stay in a run its reporter never ran
        code, details = details_of(lambda: kinds.report(execution.metadata.id, reported, "progress"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert "sets messages on a run only once a runner has claimed it" in details
        assert kinds.executions.get(execution.metadata.id) == before, "a refused report writes nothing"
        after = kinds.report(execution.metadata.id, reported, error="no runner for it" if effective == FAILED else "")
        assert after.status.phase == effective and not after.status.messages
        assert after.status.HasField("completed_at") == phases.is_terminal(effective)
        return
    if (current, effective) in LEGAL:
        after = kinds.report(execution.metadata.id, reported, "progress")
        assert after.status.phase == effective
        assert [m.content for m in after.status.messages][-1] == "progress"
        went_through_in_progress = current == IN_PROGRESS or effective == IN_PROGRESS
        assert after.status.HasField("started_at") == went_through_in_progress
        assert after.status.HasField("completed_at") == phases.is_terminal(effective)
        return
    code, details = details_of(lambda: kinds.report(execution.metadata.id, reported, "late"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert _name(current) in details
    assert kinds.executions.get(execution.metadata.id) == before, "a refused report writes nothing"


@pytest.mark.parametrize("current", REACHABLE, ids=[_name(p) for p in REACHABLE])
def test_cancel(kinds: Kinds, current: int) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    drive_to(kinds, execution.metadata.id, current)
    before = kinds.executions.get(execution.metadata.id)
    if current in (PENDING, IN_PROGRESS):
        cancelled = kinds.cancel(execution.metadata.id, "not needed")
        assert cancelled.status.phase == CANCELLED
        assert cancelled.status.error.code == "CANCELLED" and cancelled.status.error.message == "not needed"
        assert cancelled.status.HasField("completed_at")
        assert cancelled.metadata.resource_version > before.metadata.resource_version
    elif current == CANCELLED:
        assert kinds.cancel(execution.metadata.id) == before, "cancelling again changes nothing"
    else:
        assert code_of(lambda: kinds.cancel(execution.metadata.id)) == grpc.StatusCode.FAILED_PRECONDITION
        assert kinds.executions.get(execution.metadata.id) == before


def test_times_are_stamped_once(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    assert not execution.status.HasField("started_at") and not execution.status.HasField("completed_at")
    started = kinds.report(execution.metadata.id, IN_PROGRESS)
    again = kinds.report(execution.metadata.id, IN_PROGRESS, "more")
    assert again.status.started_at == started.status.started_at
    done = kinds.report(execution.metadata.id, COMPLETED)
    assert done.status.completed_at.ToNanoseconds() >= done.status.started_at.ToNanoseconds() > 0


def test_unknown_execution_and_missing_fields(kinds: Kinds) -> None:
    missing = "aex-01arz3ndektsv4rrffq69g5fav"
    assert code_of(lambda: kinds.report(missing, IN_PROGRESS)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: kinds.cancel(missing)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: kinds.report("", IN_PROGRESS)) == grpc.StatusCode.INVALID_ARGUMENT
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    assert code_of(lambda: kinds.report(execution.metadata.id, 42)) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_report_that_would_outgrow_a_response_is_refused(kinds: Kinds) -> None:
    """Reports append; the execution must still fit in one gRPC response, so the one that would not is refused."""
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    kinds.report(execution.metadata.id, IN_PROGRESS)
    chunk = "x" * (800 << 10)
    for _ in range(2):  # the content an execution may take (2 MiB less its lifecycle's headroom) holds two
        kinds.report(execution.metadata.id, 0, chunk)
    before = kinds.executions.get(execution.metadata.id)
    code, details = details_of(lambda: kinds.report(execution.metadata.id, 0, chunk))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "report less at a time" in details
    assert "an execution's content may take: max_object_bytes (2097152) less" in details
    assert kinds.executions.get(execution.metadata.id) == before
    assert kinds.report(execution.metadata.id, COMPLETED).status.phase == COMPLETED


def test_a_report_past_a_status_list_rule_is_refused_and_the_execution_stays_editable(kinds: Kinds) -> None:
    """Reports of 20,000 messages each took status.messages past its own rule (65,536): stored,
    after which every update of the execution (a label) failed validation."""
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    kinds.report(execution.metadata.id, IN_PROGRESS)
    chunk = [""] * 20_000
    for _ in range(3):
        kinds.report(execution.metadata.id, 0, *chunk)
    code, details = details_of(lambda: kinds.report(execution.metadata.id, 0, *chunk))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "adds 20000 to the 60000 status.messages" in details and "at most 65536" in details
    stored = kinds.executions.get(execution.metadata.id)
    assert len(stored.status.messages) == 60_000
    stored.metadata.labels["checked"] = "yes"
    assert kinds.executions.update(stored).metadata.labels["checked"] == "yes"
    assert kinds.report(execution.metadata.id, COMPLETED).status.phase == COMPLETED


def _claim(kinds: Kinds, execution: Any, runner: str, **status: Any) -> Any:
    return kinds.executions.call(
        "updateStatus",
        ae.AgentExecutionUpdateStatusInput(
            execution_id=execution.metadata.id,
            resource_version=execution.metadata.resource_version,
            status=ae.AgentExecutionStatus(phase=IN_PROGRESS, runner=runner, **status),  # type: ignore[arg-type]
        ),
    )


def test_a_runner_that_retries_its_claim_keeps_the_run_and_another_runner_is_refused(kinds: Kinds) -> None:
    """A claim whose answer was lost (a daemon restart answers CANCELLED or UNAVAILABLE) was retried
    with the now stale version and answered ABORTED, as if another runner had it: the runner
    dropped the run and it stayed IN_PROGRESS with nobody running it."""
    agent = kinds.agent()
    pending = kinds.execution(agent_id=agent.metadata.id)
    claimed = _claim(kinds, pending, "host-a:101")
    assert (claimed.status.phase, claimed.status.runner) == (IN_PROGRESS, "host-a:101")
    again = _claim(kinds, pending, "host-a:101")  # the same request: its version is stale now
    assert (again.status.phase, again.status.runner) == (IN_PROGRESS, "host-a:101")  # a heartbeat, not ABORTED
    code, details = details_of(lambda: _claim(kinds, pending, "host-b:202"))
    assert code == grpc.StatusCode.ABORTED and "claimed by runner 'host-a:101'" in details

    def report(runner: str) -> Any:
        status = ae.AgentExecutionStatus(runner=runner)
        status.messages.add(type=ae.MESSAGE_AI, content=f"from {runner or 'nobody'}")
        request = ae.AgentExecutionUpdateStatusInput(execution_id=pending.metadata.id, status=status)
        return kinds.executions.call("updateStatus", request)

    code, details = details_of(lambda: report("host-b:202"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "is run by runner 'host-a:101'" in details
    assert [m.content for m in report("host-a:101").status.messages] == ["from host-a:101"]
    code, details = details_of(lambda: report(""))  # or any runner token could report on a claimed run
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "must name that runner" in details
    stored = kinds.executions.get(pending.metadata.id)
    assert [m.content for m in stored.status.messages] == ["from host-a:101"]
    assert stored.status.runner == "host-a:101"


def test_a_runner_progress_report_that_repeats_the_phase_is_stored_and_a_cancelled_run_is_not_reclaimed(
    kinds: Kinds,
) -> None:
    """Only a claim (the phase and the runner's name, nothing else, with the version it claimed at) is
    answered as made when retried: a progress report repeating IN_PROGRESS was dropped unstored."""
    agent = kinds.agent()
    pending = kinds.execution(agent_id=agent.metadata.id)
    _claim(kinds, pending, "host-a:101")

    def progress(version: int, content: str) -> Any:
        status = ae.AgentExecutionStatus(phase=IN_PROGRESS, runner="host-a:101")  # type: ignore[arg-type]
        status.messages.add(type=ae.MESSAGE_AI, content=content)
        request = ae.AgentExecutionUpdateStatusInput(
            execution_id=pending.metadata.id, resource_version=version, status=status
        )
        return kinds.executions.call("updateStatus", request)

    unguarded = progress(0, "first")
    progress(unguarded.metadata.resource_version, "second")  # guarded by the version it was answered
    stored = kinds.executions.get(pending.metadata.id)
    assert [m.content for m in stored.status.messages] == ["first", "second"]
    kinds.cancel(pending.metadata.id)
    code, details = details_of(lambda: _claim(kinds, pending, "host-a:101"))  # ended since: not the runner's any more
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "was cancelled" in details


def test_a_workflow_run_records_its_runner_and_takes_its_retried_claim(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = runs.create(execution(workflow_id=stubs.workflows.create(workflow()).metadata.id))
    claim = wx.WorkflowExecutionUpdateStatusInput(
        execution_id=run.metadata.id,
        resource_version=run.metadata.resource_version,
        status={"phase": IN_PROGRESS, "runner": "worker-7"},
    )
    claimed = runs.commands.updateStatus(claim)
    assert claimed.status.runner == "worker-7"
    again = runs.commands.updateStatus(claim)  # its version stale: taken as a heartbeat
    assert (again.status.runner, again.status.phase) == ("worker-7", IN_PROGRESS)
    assert again.status.heartbeat_at.ToNanoseconds() >= claimed.status.heartbeat_at.ToNanoseconds()
    progress = wx.WorkflowExecutionUpdateStatusInput(
        execution_id=run.metadata.id,
        status={"phase": IN_PROGRESS, "runner": "worker-7", "tasks": [{"task_name": "fetch", "phase": IN_PROGRESS}]},
    )
    tasks = {t.task_name: t.phase for t in runs.commands.updateStatus(progress).status.tasks}
    assert tasks["fetch"] == IN_PROGRESS


@contextlib.contextmanager
def _one_second_lease(tmp_path: Any, store: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Kinds, Any]]:
    """A daemon whose run lease is one second, and a PENDING execution in it."""
    monkeypatch.setenv("STIGMER_RUN_LEASE_SECONDS", "1")
    with Application.open(tmp_path / "data", durable=False, store=store) as app:
        kinds = Kinds.on(app, app.channel())
        yield kinds, kinds.execution(agent_id=kinds.agent().metadata.id)


def test_a_silent_runners_run_is_taken_over_after_the_lease_and_a_heartbeat_keeps_it(
    tmp_path: Any, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that died left its run IN_PROGRESS for good: nobody but an editor could end it."""
    import time

    with _one_second_lease(tmp_path, stigmer_store, monkeypatch) as (kinds, pending):
        held = _claim(kinds, pending, "host-a:101")
        assert held.status.heartbeat_at.seconds > 0
        code, details = details_of(lambda: _claim(kinds, held, "host-b:202"))  # the current version
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "may claim it after 1 s without a report" in details
        time.sleep(0.7)
        beat = ae.AgentExecutionUpdateStatusInput(
            execution_id=pending.metadata.id, status=ae.AgentExecutionStatus(phase=IN_PROGRESS, runner="host-a:101")
        )
        held = kinds.executions.call("updateStatus", beat)  # a heartbeat: the bare claim, no version
        time.sleep(0.7)  # 1.4 s after the claim, 0.7 s after the heartbeat: still held
        code, _ = details_of(lambda: _claim(kinds, held, "host-b:202"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        time.sleep(0.6)  # silent past the lease
        taken = _claim(kinds, held, "host-b:202")
        assert (taken.status.phase, taken.status.runner) == (IN_PROGRESS, "host-b:202")
        code, details = details_of(lambda: kinds.executions.call("updateStatus", beat))  # the old runner is back
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "is run by runner 'host-b:202'" in details
        assert _claim(kinds, held, "host-b:202").status.runner == "host-b:202"  # its retried claim stands


def test_a_report_sent_again_with_its_id_is_applied_once(kinds: Kinds) -> None:
    """A progress report retried after a lost answer appended its messages twice, and a retried
    COMPLETED was refused as a move out of a terminal phase. Another runner's report with the same
    id is that runner's own: refused as another runner's, never taken for the first."""
    agent = kinds.agent()
    pending = kinds.execution(agent_id=agent.metadata.id)
    _claim(kinds, pending, "host-a:101")

    def report(report_id: str, *contents: str, phase: int = 0) -> Any:
        status = ae.AgentExecutionStatus(phase=phase, runner="host-a:101", report_id=report_id)  # type: ignore[arg-type]
        for content in contents:
            status.messages.add(type=ae.MESSAGE_AI, content=content)
        request = ae.AgentExecutionUpdateStatusInput(execution_id=pending.metadata.id, status=status)
        return kinds.executions.call("updateStatus", request)

    report("r1", "step 1")
    assert [m.content for m in report("r1", "step 1").status.messages] == ["step 1"]  # sent again: once
    report("r2", "step 2")
    done = report("r3", phase=COMPLETED)
    assert report("r3", phase=COMPLETED).metadata.resource_version == done.metadata.resource_version
    assert [m.content for m in done.status.messages] == ["step 1", "step 2"]
    code, _ = details_of(lambda: report("r4", phase=COMPLETED))  # a new report after the end: refused
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_report_ids_are_one_runners_own(kinds: Kinds) -> None:
    """The id check came first and ignored the runner: two runners claiming with the same report id
    both won, and after a takeover the new runner's first report was dropped as a repeat."""
    agent = kinds.agent()
    pending = kinds.execution(agent_id=agent.metadata.id)

    def claim_with_id(runner: str) -> Any:
        status = ae.AgentExecutionStatus(phase=IN_PROGRESS, runner=runner, report_id="claim")  # type: ignore[arg-type]
        request = ae.AgentExecutionUpdateStatusInput(
            execution_id=pending.metadata.id, resource_version=pending.metadata.resource_version, status=status
        )
        return kinds.executions.call("updateStatus", request)

    assert claim_with_id("host-a:101").status.runner == "host-a:101"
    assert claim_with_id("host-a:101").status.runner == "host-a:101"  # its own retry
    code, details = details_of(lambda: claim_with_id("host-b:202"))  # lost the race: the same id is not its
    assert code == grpc.StatusCode.ABORTED and "claimed by runner 'host-a:101'" in details


def test_a_run_claimed_without_a_name_is_never_taken_over(
    tmp_path: Any, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its runner's reports carry no heartbeat, so it looked silent while worked and was taken over."""
    import time

    with _one_second_lease(tmp_path, stigmer_store, monkeypatch) as (kinds, pending):
        held = kinds.report(pending.metadata.id, IN_PROGRESS)  # a claim that names no runner
        time.sleep(1.2)
        held = kinds.report(pending.metadata.id, 0, "still working")
        code, details = details_of(lambda: _claim(kinds, held, "host-b:202"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "gave no name" in details
        assert kinds.report(pending.metadata.id, COMPLETED).status.phase == COMPLETED


def test_a_runner_naming_itself_on_a_pending_run_without_claiming_it_is_refused(kinds: Kinds) -> None:
    """A claim whose phase a client spelled wrong (protobufjs reads an unknown enum name as 0) was
    answered OK with the run still PENDING and the runner recorded: it looked like a claim that held."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    request = ae.AgentExecutionUpdateStatusInput(
        execution_id=pending.metadata.id,
        resource_version=pending.metadata.resource_version,
        status=ae.AgentExecutionStatus(runner="typo-runner"),
    )
    code, details = details_of(lambda: kinds.executions.call("updateStatus", request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "EXECUTION_IN_PROGRESS" in details
    assert kinds.executions.get(pending.metadata.id) == pending
    failed = ae.AgentExecutionStatus(phase=FAILED, runner="host-a:101")  # type: ignore[arg-type]
    failed.error.code, failed.error.message = "ERROR", "cannot start"
    ended = kinds.executions.call(
        "updateStatus", ae.AgentExecutionUpdateStatusInput(execution_id=pending.metadata.id, status=failed)
    )
    assert ended.status.phase == FAILED  # a runner may still end a run it cannot start


Report = Callable[..., Any]


@contextlib.contextmanager
def _two_runner_tokens(tmp_path: Any) -> Iterator[tuple[Application, Any, Report, Report]]:
    """A token-requiring server, a PENDING run of org alpha, and ``report`` as two runner tokens
    of that org, each naming runner 'host-a:101': (app, the run, as_a(phase, version), as_b(...))."""
    from stigmer_core.kind_client import KindClient
    from tests.auth_support import ALPHA, make_token, requiring_tokens, served, with_token

    with requiring_tokens(tmp_path) as app, served(app, max_workers=4) as server:
        kinds = Kinds.on(app, app.channel())
        pending = kinds.execution(agent_id=kinds.agent(org=ALPHA).metadata.id, org=ALPHA)
        kind = app.registry.kind("AgentExecution")
        with grpc.insecure_channel(server.address) as plain:

            def as_runner(name: str) -> Report:
                client = KindClient(with_token(plain, make_token(app, ALPHA, "runner", name)[0]), kind)

                def report(phase: int = 0, version: int = 0) -> Any:
                    status = ae.AgentExecutionStatus(phase=phase, runner="host-a:101")  # type: ignore[arg-type]
                    request = ae.AgentExecutionUpdateStatusInput(
                        execution_id=pending.metadata.id, resource_version=version, status=status
                    )
                    return client.call("updateStatus", request)

                return report

            yield app, pending, as_runner("runner a"), as_runner("runner b")


def test_a_runner_name_is_no_credential_a_report_comes_with_the_claiming_token(tmp_path: Any) -> None:
    """status.runner is readable by every viewer of the org: another runner token naming it could
    report on, or end, a run it never claimed."""
    with _two_runner_tokens(tmp_path) as (app, pending, as_a, as_b):
        claimed = as_a(IN_PROGRESS, pending.metadata.resource_version)
        assert claimed.status.audit.status_audit.created_by.id == "token:alpha/runner-a"
        code, details = details_of(lambda: as_b(COMPLETED))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "token that claimed it" in details
        code, _ = details_of(lambda: as_b(IN_PROGRESS, pending.metadata.resource_version))
        assert code == grpc.StatusCode.FAILED_PRECONDITION  # a retried claim is its claimant's only
        assert as_a(IN_PROGRESS).status.phase == IN_PROGRESS  # its own runner's heartbeat
        # silent past the lease, the name's claim may come with another token (a restarted runner)
        app.registry.limits = attrs.evolve(app.registry.limits, run_lease_seconds=1)
        time.sleep(1.5)
        taken = as_b(IN_PROGRESS)
        assert taken.status.audit.status_audit.created_by.id == "token:alpha/runner-b"
        code, _ = details_of(lambda: as_a(COMPLETED))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert as_b(COMPLETED).status.phase == COMPLETED


def test_a_runners_report_is_audited_as_a_status_change_not_an_edit_of_the_spec(tmp_path: Any) -> None:
    """A report stamped the spec's audit: the runner was named as the spec's last editor and the
    editor's last change of it was lost."""
    with _two_runner_tokens(tmp_path) as (_app, pending, as_a, _as_b):
        spec_audit = pending.status.audit.spec_audit
        assert spec_audit.updated_by.id and spec_audit.updated_by.id != "token:alpha/runner-a"
        claimed = as_a(IN_PROGRESS, pending.metadata.resource_version)
        reported = as_a(COMPLETED)
        for after in (claimed, reported):
            assert after.status.audit.spec_audit == spec_audit
            assert after.status.audit.status_audit.updated_by.id == "token:alpha/runner-a"
        assert (
            reported.status.audit.status_audit.updated_at.ToNanoseconds() >= claimed.metadata.updated_at.ToNanoseconds()
        )


def test_a_run_claimed_before_claims_recorded_their_token_is_its_runners_first_reporters(tmp_path: Any) -> None:
    """A run claimed by an older release has a runner name but no claimant: its runner's next
    report records one, after which another token naming the runner is refused."""
    with _two_runner_tokens(tmp_path) as (app, pending, as_a, as_b):
        claimed = as_a(IN_PROGRESS, pending.metadata.resource_version)
        older = ae.AgentExecution()
        older.CopyFrom(claimed)
        older.status.audit.ClearField("status_audit")  # as an older release stored it
        key = app.registry.kind("AgentExecution").object_key(older.metadata.id)
        app.store.transact(lambda txn: txn.put(key, older.SerializeToString()))
        assert as_a().status.audit.status_audit.created_by.id == "token:alpha/runner-a"
        code, _ = details_of(lambda: as_b(COMPLETED))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
