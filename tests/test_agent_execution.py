"""AgentExecution end to end, on both paths: creation from a session or an
agent, its fixed input, list and listBySession from indexes, and deletes
refused while it runs or cascading once it has ended."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import key_families, page_token_key, raw_keys
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

MISSING_SESSION = "ses-01arz3ndektsv4rrffq69g5fav"


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _token_key(token: str) -> bytes:
    return page_token_key(token)


def _without_log(families: dict[str, int]) -> dict[str, int]:
    """Key counts apart from the event log and the revision counter, which only grow."""
    return {family: n for family, n in families.items() if family not in ("e", "m")}


def test_create_from_an_agent_opens_a_session_in_the_same_transaction(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent("Support Bot")
    commits = stigmer_app.store.commits  # type: ignore[attr-defined]
    execution = kinds.execution("first", agent_id=agent.metadata.id, message="Where is my order?\nThanks")
    assert stigmer_app.store.commits == commits + 1  # type: ignore[attr-defined]
    assert execution.status.phase == PENDING
    session = kinds.sessions.get(execution.spec.session_id)
    assert session.spec.agent_instance_id == agent.status.default_instance_id
    assert session.status.agent_id == agent.metadata.id
    assert session.spec.subject == "Where is my order?"
    assert execution.spec.agent_id == agent.metadata.id
    assert execution.status.agent_instance_id == agent.status.default_instance_id
    assert [(o.kind, o.id) for o in execution.metadata.owner_references] == [("Session", session.metadata.id)]
    context = kinds.contexts.get(execution.status.execution_context_id)
    assert context.spec.execution_id == execution.metadata.id and context.metadata.slug == execution.metadata.id
    again = kinds.execution("second", agent_id=agent.metadata.id)
    assert again.spec.session_id != execution.spec.session_id, "an agent id always opens a new session"


def test_create_from_a_session(kinds: Kinds) -> None:
    agent = kinds.agent()
    session = kinds.session(agent.status.default_instance_id)
    execution = kinds.execution(session_id=session.metadata.id)
    assert execution.spec.session_id == session.metadata.id
    assert execution.spec.agent_id == agent.metadata.id, "recorded from the session"
    both = kinds.execution("both", session_id=session.metadata.id, agent_id=agent.metadata.id)
    assert both.spec.session_id == session.metadata.id
    assert len(list(kinds.sessions.list_all())) == 1


def test_create_refusals_name_the_field(kinds: Kinds) -> None:
    agent, other = kinds.agent("a"), kinds.agent("b")
    session = kinds.session(agent.status.default_instance_id)
    code, details = details_of(lambda: kinds.execution())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.session_id" in details
    code, details = details_of(lambda: kinds.execution(session_id=MISSING_SESSION))
    assert code == grpc.StatusCode.NOT_FOUND and "spec.session_id" in details
    code, details = details_of(lambda: kinds.execution(agent_id="agt-01arz3ndektsv4rrffq69g5fav"))
    assert code == grpc.StatusCode.NOT_FOUND and "spec.agent_id" in details
    code, details = details_of(lambda: kinds.execution(session_id=session.metadata.id, agent_id=other.metadata.id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.agent_id" in details
    code, details = details_of(lambda: kinds.execution(agent_id=agent.metadata.id, message=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.message" in details
    assert code_of(lambda: kinds.execution(agent_id=agent.metadata.id, org="acme")) == grpc.StatusCode.NOT_FOUND
    code, details = details_of(
        lambda: kinds.execution(agent_id=agent.metadata.id, runtime_env={"bad key": ("v", False)})
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.runtime_env" in details


def test_a_failed_create_leaves_no_session_behind(kinds: Kinds, stigmer_app: Application) -> None:
    """The session opened for an agent goes with the execution when a later step refuses it."""
    agent = kinds.agent("needs env", env_slugs=["missing-env"])
    before = _without_log(key_families(stigmer_app.store))
    code, details = details_of(lambda: kinds.execution(agent_id=agent.metadata.id))
    assert code == grpc.StatusCode.NOT_FOUND and "missing-env" in details
    assert _without_log(key_families(stigmer_app.store)) == before


def test_input_is_fixed_after_create(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(
        agent_id=agent.metadata.id, runtime_env={"TOKEN": ("s3cr3t-value", True), "MODE": ("fast", False)}
    )
    relabelled = ae.AgentExecution()
    relabelled.CopyFrom(execution)
    relabelled.metadata.labels["team"] = "a"
    relabelled.ClearField("spec")  # leaving the spec out keeps it
    updated = kinds.executions.update(relabelled)
    assert updated.metadata.labels["team"] == "a" and updated.spec == execution.spec
    assert updated.status.phase == PENDING
    assert updated.status.execution_context_id == execution.status.execution_context_id
    as_read = ae.AgentExecution()
    as_read.CopyFrom(updated)  # the document as read back (secret redacted) applies unchanged
    assert kinds.executions.apply(as_read) == updated
    for field, change in (
        ("spec.message", lambda e: setattr(e.spec, "message", "something else")),
        ("spec.session_id", lambda e: setattr(e.spec, "session_id", MISSING_SESSION)),
        ("spec.runtime_env", lambda e: setattr(e.spec.runtime_env["MODE"], "value", "slow")),
    ):
        changed = ae.AgentExecution()
        changed.CopyFrom(updated)
        change(changed)
        code, details = details_of(lambda c=changed: kinds.executions.update(c))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details
    assert kinds.executions.get(execution.metadata.id) == updated


def _all_pages(
    kinds: Kinds,
    method: str,
    request: ae.ListAgentExecutionsRequest | ae.ListAgentExecutionsBySessionRequest,
    index: bytes,
) -> list[str]:
    got: list[str] = []
    while True:
        page = kinds.executions.call(method, request)
        got.extend(e.metadata.id for e in page.entries)
        if not page.next_page_token:
            return got
        assert _token_key(page.next_page_token).startswith(index), f"served from {index!r}"
        request.page_token = page.next_page_token


def test_list_by_phase_and_tags_and_by_session(kinds: Kinds) -> None:
    agent = kinds.agent()
    sessions = [kinds.session(agent.status.default_instance_id, f"s{i}") for i in range(2)]
    made = [
        kinds.execution(f"e{i}", session_id=sessions[i % 2].metadata.id, tags=["nightly"] if i % 3 else ["adhoc"])
        for i in range(8)
    ]
    finals = {
        0: COMPLETED,
        1: IN_PROGRESS,
        2: FAILED,
        3: PENDING,
        4: COMPLETED,
        5: CANCELLED,
        6: IN_PROGRESS,
        7: COMPLETED,
    }
    for i, phase in finals.items():
        drive_to(kinds, made[i].metadata.id, phase)
    ids = [e.metadata.id for e in made]
    for phase in (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED):
        request = ae.ListAgentExecutionsRequest(phase=phase, page_size=2)  # type: ignore[arg-type]
        got = _all_pages(kinds, "list", request, b"x/agentexecutions/phase/")
        assert got == [ids[i] for i, p in finals.items() if p == phase]
    nightly_done = ae.ListAgentExecutionsRequest(org="local", phase=COMPLETED, tags=["nightly"], page_size=1)  # type: ignore[arg-type]
    got = _all_pages(kinds, "list", nightly_done, b"x/agentexecutions/phase/")
    assert got == [ids[i] for i, p in finals.items() if p == COMPLETED and "nightly" in made[i].metadata.tags]
    tagged = _all_pages(
        kinds, "list", ae.ListAgentExecutionsRequest(tags=["adhoc"], page_size=1), b"x/agentexecutions/tag/"
    )
    assert tagged == [e.metadata.id for e in made if "adhoc" in e.metadata.tags]
    for session in sessions:
        request = ae.ListAgentExecutionsBySessionRequest(session_id=session.metadata.id, page_size=3)
        got = _all_pages(kinds, "listBySession", request, b"x/agentexecutions/session/")
        assert got == [e.metadata.id for e in made if e.spec.session_id == session.metadata.id]
    assert code_of(lambda: kinds.executions.call("listBySession", ae.ListAgentExecutionsBySessionRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # a slug named nothing there and answered an empty page, as if the session had no runs
    by_slug = ae.ListAgentExecutionsBySessionRequest(session_id=sessions[0].metadata.slug)
    with pytest.raises(grpc.RpcError) as refused:
        kinds.executions.call("listBySession", by_slug)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "session_id: " in refused.value.details() and "takes the id, not a slug" in refused.value.details()


def test_phase_index_follows_the_lifecycle(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)

    def phases() -> set[bytes]:
        return {k.split(b"\x00")[-2] for k in raw_keys(stigmer_app.store, b"x/agentexecutions/phase/")}

    assert phases() == {b"EXECUTION_PENDING"}
    kinds.report(execution.metadata.id, IN_PROGRESS)
    assert phases() == {b"EXECUTION_IN_PROGRESS"}
    kinds.cancel(execution.metadata.id)
    assert phases() == {b"EXECUTION_CANCELLED"}


@pytest.mark.parametrize("target", ["session", "agent", "instance"])
def test_deletes_are_refused_while_an_execution_runs(kinds: Kinds, target: str) -> None:
    agent = kinds.agent()
    instance = kinds.instances.create(
        agentinstance_pb2.AgentInstance(
            metadata=metadata_pb2.ApiResourceMetadata(name="extra"),
            spec=agentinstance_pb2.AgentInstanceSpec(agent_id=agent.metadata.id),
        )
    )
    session = kinds.session(instance.metadata.id)
    execution = kinds.execution(session_id=session.metadata.id)
    kinds.report(execution.metadata.id, IN_PROGRESS)
    client, target_id = {
        "session": (kinds.sessions, session.metadata.id),
        "agent": (kinds.agents, agent.metadata.id),
        "instance": (kinds.instances, instance.metadata.id),
    }[target]
    code, details = details_of(lambda: client.delete(target_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "still referenced by agent execution" in details
    assert kinds.executions.get(execution.metadata.id).status.phase == IN_PROGRESS
    assert kinds.sessions.get(session.metadata.id) == session
    kinds.report(execution.metadata.id, COMPLETED)
    client.delete(target_id)  # an ended execution no longer blocks; it goes with its session
    assert code_of(lambda: kinds.executions.get(execution.metadata.id)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: kinds.contexts.get(execution.status.execution_context_id)) == grpc.StatusCode.NOT_FOUND


def test_cascade_from_the_agent_leaves_no_orphan(kinds: Kinds, stigmer_app: Application) -> None:
    before = _without_log(key_families(stigmer_app.store))
    agent = kinds.agent()
    session = kinds.session(agent.status.default_instance_id, tags=["t"])
    for i in range(3):
        execution = kinds.execution(
            f"e{i}", session_id=session.metadata.id, tags=["x"], labels={"team": "a"}, runtime_env={"K": ("v", True)}
        )
        drive_to(kinds, execution.metadata.id, (COMPLETED, FAILED, CANCELLED)[i])
    kinds.execution("from agent", agent_id=agent.metadata.id)  # PENDING: cancel it, then delete
    pending = next(e for e in kinds.executions.list_all() if e.status.phase == PENDING)
    kinds.cancel(pending.metadata.id)
    families = key_families(stigmer_app.store)
    assert families["o/agentexecutions"] == 4 and families["o/executioncontexts"] == 4 and families["o/sessions"] == 2
    kinds.agents.delete(agent.metadata.id)
    assert _without_log(key_families(stigmer_app.store)) == before


def test_deleting_an_execution_deletes_its_context(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    session_keys = raw_keys(stigmer_app.store, b"o/sessions/")
    deleted = kinds.executions.delete(execution.metadata.id)  # a live execution may itself be deleted
    assert deleted == execution
    assert raw_keys(stigmer_app.store, b"o/executioncontexts/") == []
    assert raw_keys(stigmer_app.store, b"x/agentexecutions/") == []
    assert raw_keys(stigmer_app.store, b"x/executioncontexts/") == []
    assert raw_keys(stigmer_app.store, b"r/" + execution.metadata.id.encode()) == []
    assert raw_keys(stigmer_app.store, b"q/" + execution.spec.session_id.encode()) == []
    assert raw_keys(stigmer_app.store, b"o/sessions/") == session_keys, "the session stays"
