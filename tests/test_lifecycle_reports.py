"""What a runner's reports are answered with: a report sent again after a lost answer (its
``report_id`` among the run's recent ones) is applied once, on both engines; a report on an
ended run, and a version that does not match, are refused with words that say why."""

from __future__ import annotations

from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, StartupError
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.limits import Limits
from tests.agent_execution_support import COMPLETED, IN_PROGRESS, Kinds, details_of
from tests.workflow_helpers import Executions, Stubs, execution, report, task_status, workflow


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _reporter(kinds: Kinds, execution_id: str, runner: str) -> Any:
    def send(report_id: str = "", *contents: str, phase: int = 0, version: int = 0) -> Any:
        status = ae.AgentExecutionStatus(phase=phase, runner=runner, report_id=report_id)  # type: ignore[arg-type]
        for content in contents:
            status.messages.add(type=ae.MESSAGE_AI, content=content)
        request = ae.AgentExecutionUpdateStatusInput(execution_id=execution_id, resource_version=version, status=status)
        return kinds.executions.call("updateStatus", request)

    return send


def _contents(run: Any) -> list[str]:
    return [m.content for m in run.status.messages]


def test_a_retried_report_is_applied_once_after_a_heartbeat_or_another_report(
    stigmer_app: Application, kinds: Kinds
) -> None:
    """Only the last report's id was kept, and a heartbeat (no id) cleared it: a retry after either
    was applied again, its messages appended twice."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    send = _reporter(kinds, pending.metadata.id, "host-a:101")
    send(phase=IN_PROGRESS, version=pending.metadata.resource_version)  # the claim
    send("A", "a")
    send()  # a bare heartbeat
    assert _contents(send("A", "a")) == ["a"]
    send("B", "b")
    again = send("A", "a")  # A, B, then A again
    assert _contents(again) == ["a", "b"]
    assert (list(again.status.recent_report_ids), again.status.report_id) == (["A", "B"], "B")
    stigmer_app.registry.limits = attrs.evolve(stigmer_app.registry.limits, report_id_window=2)
    send("C", "c")
    assert list(send("D", "d").status.recent_report_ids) == ["C", "D"]  # the window is bounded
    assert _contents(send("B", "b"))[-1] == "b"  # past the window: a new report
    done = send("E", phase=COMPLETED)
    assert send("B", "b").status.phase == COMPLETED  # a retry after the end: answered, not refused
    assert _contents(kinds.executions.get(pending.metadata.id)) == _contents(done)


def test_a_retried_report_on_a_run_claimed_without_a_name_is_applied_once(kinds: Kinds) -> None:
    """A run claimed without a runner name ignored report_id altogether."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    send = _reporter(kinds, pending.metadata.id, "")
    send("claim", phase=IN_PROGRESS, version=pending.metadata.resource_version)
    first = send("A", "a")
    assert send("A", "a") == first  # nothing written
    send("B", "b")
    assert _contents(send("A", "a")) == ["a", "b"]
    assert _contents(send("claim", phase=IN_PROGRESS)) == ["a", "b"]


def test_a_retry_from_another_runner_is_still_refused(kinds: Kinds) -> None:
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    mine = _reporter(kinds, pending.metadata.id, "host-a:101")
    mine(phase=IN_PROGRESS, version=pending.metadata.resource_version)
    mine("A", "a")
    code, details = details_of(lambda: _reporter(kinds, pending.metadata.id, "host-b:202")("A", "a"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "is run by runner 'host-a:101'" in details
    code, details = details_of(lambda: _reporter(kinds, pending.metadata.id, "")("A", "a"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "must name that runner" in details
    assert _contents(kinds.executions.get(pending.metadata.id)) == ["a"]


def test_a_retry_with_another_token_under_the_runners_name_is_still_refused(tmp_path: Any) -> None:
    from stigmer_core.kind_client import KindClient
    from tests.auth_support import ALPHA, make_token, requiring_tokens, served, with_token

    with requiring_tokens(tmp_path) as app, served(app, max_workers=4) as server:
        kinds = Kinds.on(app, app.channel())
        pending = kinds.execution(agent_id=kinds.agent(org=ALPHA).metadata.id, org=ALPHA)
        with grpc.insecure_channel(server.address) as plain:
            senders = []
            for name in ("runner a", "runner b"):
                client = KindClient(with_token(plain, make_token(app, ALPHA, "runner", name)[0]), kinds.executions.kind)
                senders.append(_reporter(attrs.evolve(kinds, executions=client), pending.metadata.id, "host-a:101"))
            as_a, as_b = senders
            as_a(phase=IN_PROGRESS, version=pending.metadata.resource_version)
            as_a("A", "a")
            code, details = details_of(lambda: as_b("A", "a"))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "token that claimed it" in details
            assert _contents(as_a("A", "a")) == ["a"]


def test_a_takeover_starts_the_report_ids_again(
    tmp_path: Any, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Report ids are one runner's own: the new runner's 'A' is not the old runner's."""
    monkeypatch.setenv("STIGMER_RUN_LEASE_SECONDS", "1")
    with Application.open(tmp_path / "data", durable=False, store=stigmer_store) as app:
        kinds = Kinds.on(app, app.channel())
        pending = kinds.execution(agent_id=kinds.agent().metadata.id)
        old = _reporter(kinds, pending.metadata.id, "host-a:101")
        old(phase=IN_PROGRESS, version=pending.metadata.resource_version)
        old("A", "from a")
        app.registry.limits = attrs.evolve(app.registry.limits, run_lease_seconds=1)
        import time

        time.sleep(1.5)
        new = _reporter(kinds, pending.metadata.id, "host-b:202")
        taken = new(phase=IN_PROGRESS)
        assert (taken.status.runner, list(taken.status.recent_report_ids), taken.status.report_id) == (
            "host-b:202",
            [],
            "",
        )
        assert _contents(new("A", "from b")) == ["from a", "from b"]


def test_a_retried_workflow_report_is_applied_once_after_a_heartbeat_and_another_report(
    stigmer_channel: grpc.Channel,
) -> None:
    """A retried task report after a later one moved the task back, or was refused."""
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = runs.create(execution(workflow_id=stubs.workflows.create(workflow()).metadata.id))
    runs.report(run.metadata.id, report(IN_PROGRESS, runner="worker-7"))
    started = report(0, task_status("fetch", IN_PROGRESS), runner="worker-7", report_id="A")
    runs.report(run.metadata.id, started)
    runs.report(run.metadata.id, report(0, runner="worker-7"))  # a bare heartbeat
    runs.report(run.metadata.id, report(0, task_status("fetch", COMPLETED), runner="worker-7", report_id="B"))
    again = runs.report(run.metadata.id, started)
    assert {t.task_name: t.phase for t in again.status.tasks}["fetch"] == COMPLETED
    assert list(again.status.recent_report_ids) == ["A", "B"]


def test_a_report_on_a_cancelled_run_says_the_run_ended(kinds: Kinds) -> None:
    """A heartbeat after a cancel was refused as a move "to EXECUTION_CANCELLED" it never asked for."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    send = _reporter(kinds, pending.metadata.id, "host-a:101")
    send(phase=IN_PROGRESS, version=pending.metadata.resource_version)
    kinds.cancel(pending.metadata.id)
    stale = pending.metadata.resource_version  # a claim retried after the cancel: not "re-read and retry"
    for late in (lambda: send(), lambda: send("", "more"), lambda: send(phase=IN_PROGRESS, version=stale)):
        code, details = details_of(late)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "was cancelled (it is EXECUTION_CANCELLED, a terminal phase) and takes no more reports" in details
        assert "move to" not in details
    done = kinds.execution(agent_id=kinds.agent("other").metadata.id, name="done")
    kinds.report(done.metadata.id, IN_PROGRESS)
    kinds.report(done.metadata.id, COMPLETED)
    code, details = details_of(lambda: kinds.report(done.metadata.id, 0, "late"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "has ended (it is EXECUTION_COMPLETED, a terminal phase) and takes no more reports" in details


def test_a_version_newer_than_the_stored_one_does_not_match_it_is_not_stale(kinds: Kinds) -> None:
    """A claim, or any update, with a version the server never issued was called stale."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    stored = pending.metadata.resource_version
    send = _reporter(kinds, pending.metadata.id, "host-a:101")
    code, details = details_of(lambda: send(phase=IN_PROGRESS, version=stored + 1000))
    assert code == grpc.StatusCode.ABORTED
    assert f"resource_version {stored + 1000} does not match the stored one (current: {stored})" in details
    assert "stale" not in details
    agent = kinds.agents.create(agent_pb2.Agent(metadata={"name": "versioned"}, spec={"instructions": "x"}))
    newer = agent_pb2.Agent()
    newer.CopyFrom(agent)
    newer.metadata.resource_version += 1000
    code, details = details_of(lambda: kinds.agents.update(newer))
    assert code == grpc.StatusCode.ABORTED and "does not match the stored one" in details and "stale" not in details
    changed = agent_pb2.Agent()
    changed.CopyFrom(agent)
    changed.spec.instructions = "y"
    kinds.agents.update(changed)  # now the version read is older than the stored one: stale
    code, details = details_of(lambda: kinds.agents.update(agent))
    assert code == grpc.StatusCode.ABORTED and f"resource_version {agent.metadata.resource_version} is stale" in details


def test_the_report_id_window_is_a_setting_checked_at_startup() -> None:
    assert Limits().report_id_window == 32
    assert Limits.from_env({"STIGMER_REPORT_ID_WINDOW": "4"}).report_id_window == 4
    for bad in ("0", "1025"):
        with pytest.raises(StartupError) as refused:
            Limits.from_env({"STIGMER_REPORT_ID_WINDOW": bad})
        assert "STIGMER_REPORT_ID_WINDOW" in refused.value.message
