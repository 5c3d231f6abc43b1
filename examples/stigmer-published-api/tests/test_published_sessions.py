"""The published Session API: a reference resolved by a step, a declared
reference and index, and the running-session rpcs answering UNIMPLEMENTED."""

from __future__ import annotations

import grpc
import pytest
from ai.stigmer.agentic.session.v1 import api_pb2, io_pb2
from stigmer import AgentInput, ErrorCode, ResourceRef, SessionInput, StigmerClient, StigmerError
from stigmer_core.server import Server
from stigmer_core.testing.inspect import raw_keys

pytestmark = pytest.mark.timeout(60)


def _error(call: object, *args: object) -> StigmerError:
    with pytest.raises(StigmerError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


@pytest.fixture
def agent_id(client: StigmerClient) -> str:
    created = client.agents.create(AgentInput(name="Support Bot", org="acme", instructions="Answer kindly, always."))
    return created.metadata.id


def _session(name: str, slug: str = "support-bot", org: str = "acme") -> SessionInput:
    return SessionInput(name=name, org=org, subject="printer jam", agent_ref=ResourceRef(org=org, slug=slug))


def test_create_resolves_the_agent_reference(client: StigmerClient, agent_id: str) -> None:
    session = client.sessions.create(_session("First chat"))
    assert session.kind == "Session" and session.metadata.id.startswith("pses-")
    assert session.status.agent_id == agent_id
    assert client.sessions.get(session.metadata.id) == session
    assert [s.metadata.id for s in client.sessions.list(io_pb2.ListSessionsRequest(org="acme")).entries] == [
        session.metadata.id
    ]


def test_a_missing_agent_is_not_found(client: StigmerClient, agent_id: str) -> None:
    error = _error(client.sessions.create, _session("Lost", slug="nobody"))
    assert error.code is ErrorCode.NOT_FOUND and "spec.agent_ref" in str(error)


def test_list_by_agent_reads_the_declared_index(client: StigmerClient, agent_id: str, stigmer_server: Server) -> None:
    first = client.sessions.create(_session("First chat"))
    second = client.sessions.create(_session("Second chat"))
    other_agent = client.agents.create(AgentInput(name="Triage", org="acme", instructions="Sort tickets by urgency."))
    client.sessions.create(_session("Elsewhere", slug="triage"))
    request = io_pb2.ListSessionsByAgentRequest(agent_id=agent_id, page_size=1)
    assert [s.metadata.id for s in client.sessions.list_by_agent_all(request)] == [
        first.metadata.id,
        second.metadata.id,
    ]
    index_entries = raw_keys(stigmer_server.app.store, b"x/published-sessions/agent/")
    assert len(index_entries) == 3 and any(other_agent.metadata.id.encode() in key for key in index_entries)
    with_labels = io_pb2.ListSessionsByAgentRequest(agent_id=agent_id, labels={"tier": "gold"})
    error = _error(client.sessions.list_by_agent, with_labels)
    assert error.grpc_code == grpc.StatusCode.UNIMPLEMENTED and "listByAgent" in str(error)


def test_an_agent_with_sessions_cannot_be_deleted(client: StigmerClient, agent_id: str) -> None:
    session = client.sessions.create(_session("First chat"))
    assert _error(client.agents.delete, agent_id).code is ErrorCode.FAILED_PRECONDITION
    client.sessions.delete(session.metadata.id)
    assert client.agents.delete(agent_id).metadata.id == agent_id


def test_update_keeps_the_agent_and_honours_the_mask(client: StigmerClient, agent_id: str) -> None:
    session = client.sessions.create(_session("First chat"))
    changed = api_pb2.Session()
    changed.CopyFrom(session)
    changed.spec.subject = "toner"
    changed.metadata.name = "Renamed chat"
    updated = client.sessions.update(changed, ["spec.subject"])
    assert updated.spec.subject == "toner" and updated.metadata.name == "First chat"
    assert updated.status.agent_id == agent_id

    client.agents.create(AgentInput(name="Triage", org="acme", instructions="Sort tickets by urgency."))
    moved = api_pb2.Session()
    moved.CopyFrom(updated)
    moved.spec.agent_ref.slug = "triage"
    unmasked = client.sessions.update(moved, ["spec.subject"])
    assert unmasked.spec.agent_ref == session.spec.agent_ref, "fields outside the mask are left alone"
    for paths in (["spec.agent_ref"], []):
        error = _error(client.sessions.update, moved, paths)
        assert error.code is ErrorCode.INVALID_ARGUMENT and "spec.agent_ref" in str(error), paths
    assert client.sessions.get(session.metadata.id).status.agent_id == agent_id


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("update_subject", io_pb2.UpdateSessionSubjectRequest),
        ("interrupt", io_pb2.InterruptSessionInput),
        ("append_events", io_pb2.AppendSessionEventsInput),
        ("list_events", io_pb2.ListSessionEventsRequest),
    ],
)
def test_running_a_session_is_unimplemented(client: StigmerClient, method: str, request_type: type) -> None:
    error = _error(getattr(client.sessions, method), request_type())
    assert error.grpc_code == grpc.StatusCode.UNIMPLEMENTED
    assert "ai.stigmer.agentic.session.v1.Session" in str(error) and "is not served" in str(error)


def test_the_event_stream_is_unimplemented_too(client: StigmerClient) -> None:
    stream = client.sessions.stream_events(io_pb2.StreamSessionEventsRequest())
    error = _error(list, stream)
    assert error.grpc_code == grpc.StatusCode.UNIMPLEMENTED and "streamEvents" in str(error)
