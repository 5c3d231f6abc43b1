"""A run can always be claimed, ended and cancelled, however much content it holds: what adds
content (a create, a report with messages or tasks) is held to max_object_bytes less the headroom
the lifecycle keeps for its own fields, and a write of those fields alone may use it. On both
engines, in process and over a real server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application, Conflict, StigmerError, from_rpc_error
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.execution.v1 import execution_pb2
from stigmer_core.server import Server
from tests.agent_execution_support import COMPLETED, IN_PROGRESS, Kinds
from tests.auth_support import ALPHA, make_token, served, with_token
from tests.workflow_helpers import Executions, Stubs, execution, report, task_status, workflow

FAILED, CANCELLED = execution_pb2.EXECUTION_FAILED, execution_pb2.EXECUTION_CANCELLED
WIDE = "\U0010ffff"
"""Four bytes of UTF-8 a character: the longest a field's rule (in characters) lets a value be."""


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _refusal(call: Callable[[], object]) -> StigmerError:
    try:
        got = call()
    except grpc.RpcError as exc:
        return from_rpc_error(exc)
    raise AssertionError(f"expected a refusal, got {got}")


def _report(kinds: Kinds, execution_id: str, *contents: str, version: int = 0, **status: Any) -> Any:
    sent = ae.AgentExecutionStatus(**status)
    for content in contents:
        sent.messages.add(type=ae.MESSAGE_AI, content=content)
    request = ae.AgentExecutionUpdateStatusInput(execution_id=execution_id, resource_version=version, status=sent)
    return kinds.executions.call("updateStatus", request)


def _padded(name: str, agent_id: str, pad: int) -> ae.AgentExecution:
    """A message at its rule's longest, and ``pad`` characters of runtime values (each 16,384 to
    65,536 characters long: its length prefix keeps its size, and the pad is byte-exact)."""
    made = ae.AgentExecution(spec=ae.AgentExecutionSpec(agent_id=agent_id, message="m" * 262_144))
    made.metadata.name = name
    count = 30
    for i in range(count):
        made.spec.runtime_env[f"V{i}"].value = "v" * (pad // count + (1 if i < pad % count else 0))
    return made


def _at_content_limit(kinds: Kinds, agent_id: str, name: str = "full") -> tuple[Any, StigmerError]:
    """An execution created within a few bytes of the content limit (its times take a byte or two
    more or less from one create to the next), and the refusal of a larger one."""

    def create(pad: int) -> Any:
        return kinds.executions.create(_padded(name, agent_id, pad))

    pad = 1_900_000
    refused = _refusal(lambda: create(pad))
    for _ in range(5):
        assert refused.reason == "OBJECT_TOO_LARGE", refused
        taken = int(re.search(r"would take (\d+) bytes", refused.message).group(1))  # type: ignore[union-attr]
        pad -= taken - int(refused.metadata["limit"]) + 8
        try:
            return create(pad), refused
        except grpc.RpcError as exc:
            refused = from_rpc_error(exc)
    raise AssertionError("could not land on the content limit")


def test_a_run_created_at_its_content_limit_can_be_claimed_reported_on_failed_and_cancelled(
    stigmer_app: Application, kinds: Kinds
) -> None:
    """An execution created just under max_object_bytes could not be claimed, failed or cancelled
    (each was OBJECT_TOO_LARGE): it stayed PENDING for good. Now its create is held to the content
    limit, and every lifecycle field at its rule's longest still fits."""
    limits = stigmer_app.registry.limits
    agent_id = kinds.agent().metadata.id
    full, refused = _at_content_limit(kinds, agent_id)
    assert refused.metadata["setting"] == "STIGMER_MAX_OBJECT_BYTES"
    assert int(refused.metadata["limit"]) + int(refused.metadata["headroom"]) == limits.max_object_bytes
    assert f"more than the {refused.metadata['limit']} an execution's content may take" in refused.message
    runner = WIDE * 256
    claimed = _report(kinds, full.metadata.id, version=full.metadata.resource_version, phase=IN_PROGRESS, runner=runner)
    assert claimed.status.runner == runner
    for i in range(limits.report_id_window):  # heartbeats that fill the window with the longest ids
        _report(kinds, full.metadata.id, runner=runner, report_id=str(i).rjust(128, WIDE))
    long_error = execution_pb2.ExecutionError(code="CRASHED", message=WIDE * 65_536)  # content: no room kept
    too_long = _refusal(lambda: _report(kinds, full.metadata.id, runner=runner, phase=FAILED, error=long_error))
    assert too_long.reason == "OBJECT_TOO_LARGE" and "an error (its message at most 4,096 characters)" in too_long.message
    error = execution_pb2.ExecutionError(code=WIDE * 128, message=WIDE * 4096)
    failed = _report(kinds, full.metadata.id, runner=runner, phase=FAILED, report_id=WIDE * 128, error=error)
    assert failed.status.phase == FAILED and failed.status.error == error
    assert kinds.executions.get(full.metadata.id).ByteSize() <= limits.max_object_bytes

    pending, _ = _at_content_limit(kinds, agent_id, "full too")
    cancelled = kinds.cancel(pending.metadata.id, reason=WIDE * 4096)
    assert cancelled.status.phase == CANCELLED


def _fill(send: Callable[[int], object]) -> StigmerError:
    """Send content of shrinking sizes until even the smallest is refused: the run then holds as
    much as it may. Returns the last refusal."""
    refusal = None
    for size in (400_000, 40_000, 4_000, 400, 40, 1):
        while True:
            try:
                send(size)
            except grpc.RpcError as exc:
                refusal = from_rpc_error(exc)
                break
    assert refusal is not None
    return refusal


def test_a_run_its_runner_filled_can_still_be_failed_and_cancelled(stigmer_app: Application, kinds: Kinds) -> None:
    """A runner that reported messages up to max_object_bytes could then neither complete nor fail
    its run, and an editor's cancel was told to "report less at a time": the run stayed
    IN_PROGRESS with its heartbeats passing, its agent undeletable, its context's secrets kept."""
    agent_id = kinds.agent().metadata.id
    runs = []
    for name in ("filled a", "filled b"):
        pending = kinds.execution(name, agent_id=agent_id)
        _report(kinds, pending.metadata.id, version=pending.metadata.resource_version, phase=IN_PROGRESS, runner="r")
        refusal = _fill(lambda size, run=pending: _report(kinds, run.metadata.id, "x" * size, runner="r"))
        assert refusal.reason == "OBJECT_TOO_LARGE", refusal
        assert "report less at a time" in refusal.message and "can always be ended" in refusal.message
        assert int(refusal.metadata["limit"]) < stigmer_app.registry.limits.max_object_bytes
        runs.append(pending.metadata.id)
    first, second = runs
    assert _report(kinds, first, runner="r").status.phase == IN_PROGRESS  # a heartbeat
    error = execution_pb2.ExecutionError(code="CRASHED", message=WIDE * 4096)
    assert _report(kinds, first, runner="r", phase=FAILED, error=error).status.error == error
    cancelled = kinds.cancel(second, reason=WIDE * 4096)
    assert (cancelled.status.phase, cancelled.status.error.code) == (CANCELLED, "CANCELLED")


def test_a_workflow_run_filled_with_open_tasks_can_still_be_cancelled(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """A cancel closes every open task (CANCELLED, completed_at): on a run filled to the limit
    that growth was refused, so the run could not be cancelled."""
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = runs.create(execution(workflow_id=stubs.workflows.create(workflow()).metadata.id))
    opened = [task_status(f"t{i}", IN_PROGRESS) for i in range(900)]
    runs.report(run.metadata.id, report(IN_PROGRESS, *opened, runner="w"))
    added = iter(range(10_000))

    def send(size: int) -> object:
        status = task_status(f"fill{next(added)}", IN_PROGRESS)
        status.output.update({"v": "x" * size})
        return runs.report(run.metadata.id, report(0, status, runner="w"))

    refusal = _fill(send)
    assert refusal.reason == "OBJECT_TOO_LARGE" and "report less at a time" in refusal.message
    cancelled = runs.cancel(run.metadata.id, reason=WIDE * 4096)
    assert cancelled.status.phase == CANCELLED
    assert all(task.phase == CANCELLED and task.HasField("completed_at") for task in cancelled.status.tasks[2:])
    assert cancelled.ByteSize() <= stigmer_app.registry.limits.max_object_bytes


def test_a_claim_with_content_retried_by_its_own_runner_is_told_the_run_is_its_own(kinds: Kinds) -> None:
    """Retried after a lost answer at the same (now stale) version, a claim carrying a first
    message was refused RUN_CLAIMED naming the caller itself as the holder: a runner drops a run on
    RUN_CLAIMED, so it dropped the run it held."""
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    version = pending.metadata.resource_version

    def claim(runner: str, report_id: str = "") -> Any:
        return _report(
            kinds,
            pending.metadata.id,
            "starting",
            version=version,
            phase=IN_PROGRESS,
            runner=runner,
            report_id=report_id,
        )

    claim("host-a:101")
    refused = _refusal(lambda: claim("host-a:101"))
    assert refused.reason == "RUN_HELD_BY_CALLER", refused
    assert isinstance(refused, Conflict)  # ABORTED
    assert refused.metadata["runner"] == "host-a:101" and "already claimed by this runner" in refused.message
    assert "report_id" in refused.message
    assert [m.content for m in kinds.executions.get(pending.metadata.id).status.messages] == ["starting"]
    assert _refusal(lambda: claim("host-b:202")).reason == "RUN_CLAIMED"  # another runner's still is

    other = kinds.execution("with an id", agent_id=kinds.agent("bot 2").metadata.id)
    version = other.metadata.resource_version
    first = _report(kinds, other.metadata.id, "go", version=version, phase=IN_PROGRESS, runner="a", report_id="c1")
    again = _report(kinds, other.metadata.id, "go", version=version, phase=IN_PROGRESS, runner="a", report_id="c1")
    assert [m.content for m in again.status.messages] == [m.content for m in first.status.messages] == ["go"]
    assert again.status.runner == "a"  # a report_id on the claim: the retry is answered with the run


def test_a_workflow_claim_with_its_first_task_retried_is_told_the_run_is_its_own(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    run = runs.create(execution(workflow_id=stubs.workflows.create(workflow()).metadata.id))
    from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2 as wx

    request = wx.WorkflowExecutionUpdateStatusInput(
        execution_id=run.metadata.id,
        resource_version=run.metadata.resource_version,
        status=report(IN_PROGRESS, task_status("fetch", IN_PROGRESS), runner="w"),
    )
    runs.commands.updateStatus(request)
    refused = _refusal(lambda: runs.commands.updateStatus(request))
    assert refused.reason == "RUN_HELD_BY_CALLER", refused


def test_a_cancel_of_an_ended_run_names_the_run(kinds: Kinds) -> None:
    pending = kinds.execution(agent_id=kinds.agent().metadata.id)
    kinds.report(pending.metadata.id, IN_PROGRESS)
    kinds.report(pending.metadata.id, COMPLETED)
    refused = _refusal(lambda: kinds.cancel(pending.metadata.id))
    assert refused.reason == "RUN_ENDED"
    assert (refused.metadata["kind"], refused.metadata["id"]) == ("AgentExecution", pending.metadata.id)
    assert (refused.metadata["phase"], refused.metadata["requestedPhase"]) == (
        "EXECUTION_COMPLETED",
        "EXECUTION_CANCELLED",
    )


def test_an_editor_update_that_adds_content_is_held_to_the_content_limit(kinds: Kinds) -> None:
    """An editor's update (labels, annotations) is content: else it could eat the headroom."""
    pending, _ = _at_content_limit(kinds, kinds.agent().metadata.id)
    pending.metadata.labels["more"] = "x" * 63
    refused = _refusal(lambda: kinds.executions.update(pending))
    assert refused.reason == "OBJECT_TOO_LARGE" and "with this update" in refused.message
    assert kinds.cancel(pending.metadata.id).status.phase == CANCELLED


@pytest.fixture
def team(tmp_path: Any, stigmer_store: str | None) -> Iterator[tuple[Application, Server]]:
    """A server requiring tokens, over either engine, on a loopback port."""
    opened = Application.open(tmp_path / "team", durable=False, require_auth=True, store=stigmer_store)
    with opened as app, served(app, max_workers=4) as server:
        yield app, server


def _as(app: Application, server: Server, plain: grpc.Channel, role: str, name: str) -> Kinds:
    """The org's kinds as a token of ``role`` would call them, over the network."""
    channel = with_token(plain, make_token(app, ALPHA, role, name)[0])
    return Kinds.on(app, channel)


def test_a_runner_token_cannot_cancel_a_pending_run_it_never_claimed(team: tuple[Application, Server]) -> None:
    """A runner token moved any PENDING run of its org to CANCELLED through updateStatus, while
    cancelling is an editor's (the cancel rpc); it may end such a run only as FAILED."""
    app, server = team
    local = Kinds.on(app, app.channel())
    agent_id = local.agent(org=ALPHA).metadata.id
    with grpc.insecure_channel(server.address) as plain:
        runner = _as(app, server, plain, "runner", "runner a")
        pending = local.execution("one", agent_id=agent_id, org=ALPHA)
        refused = _refusal(lambda: _report(runner, pending.metadata.id, phase=CANCELLED))
        assert refused.reason == "PERMISSION_DENIED", refused
        assert refused.metadata["access"] == "write" and "FAILED" in refused.message
        assert local.executions.get(pending.metadata.id) == pending  # nothing written
        assert _report(runner, pending.metadata.id, phase=FAILED).status.phase == FAILED
        held = local.execution("two", agent_id=agent_id, org=ALPHA)
        _report(runner, held.metadata.id, version=held.metadata.resource_version, phase=IN_PROGRESS, runner="w")
        assert _report(runner, held.metadata.id, phase=CANCELLED, runner="w").status.phase == CANCELLED  # its own run
        editor = _as(app, server, plain, "editor", "editor a")
        third = local.execution("three", agent_id=agent_id, org=ALPHA)
        assert editor.cancel(third.metadata.id).status.phase == CANCELLED


def test_a_report_with_another_token_is_told_of_the_lease(team: tuple[Application, Server]) -> None:
    """RUN_HELD_BY_ANOTHER_TOKEN said the report must come with the claiming token, not that another
    token's claim takes the run over once the lease runs out."""
    app, server = team
    local = Kinds.on(app, app.channel())
    pending = local.execution(agent_id=local.agent(org=ALPHA).metadata.id, org=ALPHA)
    with grpc.insecure_channel(server.address) as plain:
        first = _as(app, server, plain, "runner", "runner a")
        second = _as(app, server, plain, "runner", "runner b")
        _report(first, pending.metadata.id, version=pending.metadata.resource_version, phase=IN_PROGRESS, runner="w")
        refused = _refusal(lambda: _report(second, pending.metadata.id, phase=IN_PROGRESS, runner="w"))
    lease = app.registry.limits.run_lease_seconds
    assert refused.reason == "RUN_HELD_BY_ANOTHER_TOKEN", refused
    assert refused.metadata["leaseSeconds"] == str(lease) and refused.metadata["silentSeconds"].isdigit()
    assert f"after {lease} s without a report" in refused.message and "takes it over" in refused.message


def test_the_headroom_the_limits_table_gives_is_the_one_kept() -> None:
    from pathlib import Path

    from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2 as wx
    from stigmer_core.limits import Limits
    from stigmer_plugins import headroom

    table = (Path(__file__).parent.parent / "docs" / "design.md").read_text()
    limit = Limits().max_object_bytes
    for status, window in ((ae.AgentExecutionStatus, 32), (wx.WorkflowExecutionStatus, 32)):
        kept = headroom._headroom(status, window)
        assert f"{limit - kept:,}" in table and f"{kept:,}" in table
    for status in (ae.AgentExecutionStatus, wx.WorkflowExecutionStatus):
        assert f"{headroom._headroom(status, 1024):,}" in table


def test_a_daemon_whose_object_limit_is_below_the_headroom_says_to_raise_it(
    stigmer_app: Application, kinds: Kinds
) -> None:
    import attrs

    agent_id = kinds.agent().metadata.id
    stigmer_app.registry.limits = attrs.evolve(stigmer_app.registry.limits, max_object_bytes=30_000)
    refused = _refusal(lambda: kinds.execution(agent_id=agent_id))
    assert refused.reason == "OBJECT_TOO_LARGE" and refused.metadata["limit"] == "0"
    assert "raise max_object_bytes (STIGMER_MAX_OBJECT_BYTES) above 35672" in refused.message


def test_a_daemon_with_a_small_object_limit_still_runs_executions(stigmer_app: Application, kinds: Kinds) -> None:
    """Room kept for an error message's whole rule (65,536 characters, 256 KiB) left nothing of a
    256 KiB max_object_bytes: no execution could be created there."""
    import attrs

    agent_id = kinds.agent().metadata.id
    stigmer_app.registry.limits = attrs.evolve(stigmer_app.registry.limits, max_object_bytes=256 * 1024)
    run = kinds.execution(agent_id=agent_id)
    claimed = _report(kinds, run.metadata.id, version=run.metadata.resource_version, phase=IN_PROGRESS, runner="r")
    assert claimed.status.phase == IN_PROGRESS
