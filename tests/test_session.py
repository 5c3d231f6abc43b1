"""Session end to end, on both paths: its instance, listByAgent and list from
indexes, and what deleting its instance or agent does to it."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import key_families, page_token_key, raw_keys
from tests.agent_execution_support import Kinds, code_of, details_of

MISSING_INSTANCE = "ain-01arz3ndektsv4rrffq69g5fav"


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _without_log(families: dict[str, int]) -> dict[str, int]:
    """Key counts apart from the event log and the revision counter, which only grow."""
    return {family: n for family, n in families.items() if family not in ("e", "m")}


def _token_key(token: str) -> bytes:
    return page_token_key(token)


def test_session_belongs_to_an_existing_instance_of_its_org(kinds: Kinds) -> None:
    agent = kinds.agent()
    session = kinds.session(agent.status.default_instance_id, "chat")
    assert session.metadata.slug == "chat"
    assert session.status.agent_id == agent.metadata.id
    assert [(o.kind, o.id) for o in session.metadata.owner_references] == [
        ("AgentInstance", agent.status.default_instance_id)
    ]
    code, details = details_of(lambda: kinds.session(MISSING_INSTANCE, "dangling"))
    assert code == grpc.StatusCode.NOT_FOUND and "spec.agent_instance_id" in details
    assert code_of(lambda: kinds.session(agent.status.default_instance_id, "elsewhere", org="acme")) == (
        grpc.StatusCode.NOT_FOUND
    )
    empty = session_pb2.Session(metadata=metadata_pb2.ApiResourceMetadata(name="no instance"))
    code, details = details_of(lambda: kinds.sessions.create(empty))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.agent_instance_id" in details


def test_update_keeps_instance_and_server_fields(kinds: Kinds) -> None:
    agent, other = kinds.agent("a"), kinds.agent("b")
    session = kinds.session(agent.status.default_instance_id)
    changed = session_pb2.Session()
    changed.CopyFrom(session)
    changed.spec.subject = "a new subject"
    changed.spec.thread_id = "thread-7"
    changed.spec.metadata["client"] = "cli"
    changed.status.agent_id = other.metadata.id  # status is the server's: ignored
    updated = kinds.sessions.update(changed)
    assert updated.spec.subject == "a new subject" and updated.spec.metadata["client"] == "cli"
    assert updated.status.agent_id == agent.metadata.id
    moved = session_pb2.Session()
    moved.CopyFrom(updated)
    moved.spec.agent_instance_id = other.status.default_instance_id
    code, details = details_of(lambda: kinds.sessions.update(moved))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spec.agent_instance_id" in details


def test_list_by_agent_pages_through_its_index(kinds: Kinds, stigmer_app: Application) -> None:
    agent, other = kinds.agent("a"), kinds.agent("b")
    extra = kinds.instances.create(
        agentinstance_pb2.AgentInstance(
            metadata=metadata_pb2.ApiResourceMetadata(name="second"),
            spec=agentinstance_pb2.AgentInstanceSpec(agent_id=agent.metadata.id),
        )
    )
    instances = [agent.status.default_instance_id, extra.metadata.id, other.status.default_instance_id]
    made = [kinds.session(instances[i % 3], f"s{i}") for i in range(7)]
    expected = [s.metadata.id for s in made if s.status.agent_id == agent.metadata.id]
    assert len(expected) == 5
    got: list[str] = []
    request = session_pb2.ListSessionsByAgentRequest(agent_id=agent.metadata.id, page_size=2)
    while True:
        page = kinds.sessions.call("listByAgent", request)
        assert len(page.entries) <= 2
        got.extend(s.metadata.id for s in page.entries)
        if not page.next_page_token:
            break
        assert _token_key(page.next_page_token).startswith(b"x/sessions/agent/"), "served from the agent index"
        request.page_token = page.next_page_token
    assert got == expected
    assert len(raw_keys(stigmer_app.store, b"x/sessions/agent/")) == 7
    assert code_of(lambda: kinds.sessions.call("listByAgent", session_pb2.ListSessionsByAgentRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_list_filters_by_tags_and_labels_from_indexes(kinds: Kinds) -> None:
    agent = kinds.agent()
    instance = agent.status.default_instance_id
    tagged = [kinds.session(instance, f"t{i}", tags=["vip", f"n{i % 2}"]) for i in range(5)]
    kinds.session(instance, "plain")
    elsewhere = kinds.agent(org="acme")
    kinds.session(elsewhere.status.default_instance_id, "vip elsewhere", org="acme", tags=["vip"])
    request = session_pb2.ListSessionsRequest(org="local", tags=["vip"], page_size=2)
    got: list[str] = []
    while True:
        page = kinds.sessions.call("list", request)
        got.extend(s.metadata.id for s in page.entries)
        if not page.next_page_token:
            break
        assert _token_key(page.next_page_token).startswith(b"x/sessions/tag/"), "served from the tag index"
        request.page_token = page.next_page_token
    assert got == [s.metadata.id for s in tagged]
    both = kinds.sessions.call("list", session_pb2.ListSessionsRequest(tags=["vip", "n1"], org="local"))
    assert [s.metadata.id for s in both.entries] == [s.metadata.id for s in tagged if "n1" in s.metadata.tags]
    labelled = session_pb2.Session()
    labelled.CopyFrom(tagged[0])
    labelled.metadata.labels["tier"] = "gold"
    kinds.sessions.update(labelled)
    by_label = kinds.sessions.call("list", session_pb2.ListSessionsRequest(labels={"tier": "gold"}))
    assert [s.metadata.id for s in by_label.entries] == [tagged[0].metadata.id]


def test_deleting_the_agent_deletes_its_sessions_and_leaves_nothing(kinds: Kinds, stigmer_app: Application) -> None:
    before = _without_log(key_families(stigmer_app.store))
    agent = kinds.agent()
    sessions = [kinds.session(agent.status.default_instance_id, f"s{i}", tags=["x"]) for i in range(3)]
    kinds.agents.delete(agent.metadata.id)
    for session in sessions:
        assert code_of(lambda s=session: kinds.sessions.get(s.metadata.id)) == grpc.StatusCode.NOT_FOUND
    assert _without_log(key_families(stigmer_app.store)) == before, (
        "no object, slug, index, owner or reference entry is left"
    )


def test_deleting_a_session_removes_its_index_entries(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent()
    session = kinds.session(agent.status.default_instance_id, tags=["a", "b"])
    assert raw_keys(stigmer_app.store, b"x/sessions/")
    deleted = kinds.sessions.delete(session.metadata.id)
    assert deleted == session
    assert raw_keys(stigmer_app.store, b"x/sessions/") == []
    assert raw_keys(stigmer_app.store, b"q/" + agent.status.default_instance_id.encode()) == []
    assert raw_keys(stigmer_app.store, b"r/" + agent.status.default_instance_id.encode()) == []
