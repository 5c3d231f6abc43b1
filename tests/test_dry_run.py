"""Server-side dry run and the cascade report, on both paths and both engines.

A write sent with ``stigmer-dry-run: true`` runs its whole pipeline and answers as it would,
but nothing is stored and nothing is published; a delete names everything it removed (its
cascade) in the ``stigmer-removed`` trailing metadata, dry or not.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.agentic.session.v1 import service_pb2_grpc as session_grpc
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.headers import DRY_RUN, REMOVED, REMOVED_COUNT, REMOVED_LISTED
from stigmer_core.testing.inspect import key_families

DRY = ((DRY_RUN, "true"),)


def _agent(name: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name), spec=agent_pb2.AgentSpec())


def _removed(call: Any) -> list[tuple[str, str, str]]:
    entries = [str(value).split(" ", 2) for key, value in call.trailing_metadata() or () if key == REMOVED]
    return [(kind, object_id, slug) for kind, object_id, slug in entries]


def _revision(app: Application) -> int:
    with app.store.read() as txn:
        return txn.revision


@pytest.fixture
def planted(stigmer_channel: grpc.Channel) -> tuple[agent_pb2.Agent, Any]:
    agent = agent_grpc.AgentCommandControllerStub(stigmer_channel).create(_agent("helper"))
    session = session_grpc.SessionCommandControllerStub(stigmer_channel).create(
        session_pb2.Session(
            metadata=metadata_pb2.ApiResourceMetadata(name="chat"),
            spec=session_pb2.SessionSpec(agent_instance_id=agent.status.default_instance_id),
        )
    )
    return agent, session


def test_a_dry_run_delete_names_the_cascade_and_changes_nothing(
    stigmer_app: Application, stigmer_channel: grpc.Channel, planted: tuple[agent_pb2.Agent, Any]
) -> None:
    agent, session = planted
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    before, revision = key_families(stigmer_app.store), _revision(stigmer_app)
    answered, call = agents.delete.with_call(agent_pb2.AgentId(value=agent.metadata.id), metadata=DRY)
    assert answered.metadata.id == agent.metadata.id
    expected = [
        ("Agent", agent.metadata.id, "helper"),
        ("AgentInstance", agent.status.default_instance_id, "helper-default"),
        ("Session", session.metadata.id, "chat"),
    ]
    assert _removed(call) == expected
    assert key_families(stigmer_app.store) == before
    assert _revision(stigmer_app) == revision, "a dry run publishes no event"
    # the real delete reports the same objects and removes them
    _, call = agents.delete.with_call(agent_pb2.AgentId(value=agent.metadata.id))
    assert _removed(call) == expected
    with pytest.raises(grpc.RpcError) as gone:
        agent_grpc.AgentQueryControllerStub(stigmer_channel).get(agent_pb2.AgentId(value=agent.metadata.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_dry_run_create_answers_the_object_but_stores_nothing(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    before, revision = key_families(stigmer_app.store), _revision(stigmer_app)
    answered, call = agents.create.with_call(_agent("rehearsed"), metadata=DRY)
    assert answered.metadata.slug == "rehearsed" and answered.status.default_instance_id
    assert _removed(call) == []
    assert key_families(stigmer_app.store) == before
    assert _revision(stigmer_app) == revision
    # refusals are the real ones: a dry run of a duplicate is refused like the write would be
    agents.create(_agent("rehearsed"))
    with pytest.raises(grpc.RpcError) as duplicate:
        agents.create(_agent("rehearsed"), metadata=DRY)
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_big_cascade_names_the_first_objects_and_counts_them_all(stigmer_channel: grpc.Channel) -> None:
    """One trailing entry per removed object passed what clients take (Node: 128 entries; grpc's
    C core: 8-16 KiB) once a cascade went past about 120 objects: the delete was committed and
    its client told it failed."""
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    sessions = session_grpc.SessionCommandControllerStub(stigmer_channel)
    agent = agents.create(_agent("busy"))
    for i in range(REMOVED_LISTED + 20):
        sessions.create(
            session_pb2.Session(
                metadata=metadata_pb2.ApiResourceMetadata(name=f"chat {i}"),
                spec=session_pb2.SessionSpec(agent_instance_id=agent.status.default_instance_id),
            )
        )
    for metadata in (DRY, ()):
        _, call = agents.delete.with_call(agent_pb2.AgentId(value=agent.metadata.id), metadata=metadata)
        listed = _removed(call)
        assert len(listed) == REMOVED_LISTED
        assert listed[:2] == [
            ("Agent", agent.metadata.id, "busy"),
            ("AgentInstance", agent.status.default_instance_id, "busy-default"),
        ]
        counts = [str(value) for key, value in call.trailing_metadata() or () if key == REMOVED_COUNT]
        assert counts == [f"Agent=1 AgentInstance=1 Session={REMOVED_LISTED + 20}"]


@pytest.mark.parametrize("spelled", ["True", "TRUE", "1", "yes"])
def test_a_dry_run_spelled_otherwise_is_still_a_dry_run(stigmer_channel: grpc.Channel, spelled: str) -> None:
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    agent = agents.create(_agent("kept"))
    agents.delete(agent_pb2.AgentId(value=agent.metadata.id), metadata=((DRY_RUN, spelled),))
    assert agent_grpc.AgentQueryControllerStub(stigmer_channel).get(agent_pb2.AgentId(value=agent.metadata.id)) == agent


def test_a_dry_run_value_that_is_not_yes_or_no_is_refused(stigmer_channel: grpc.Channel) -> None:
    """Read as no, a value the server does not understand would write for real."""
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    agent = agents.create(_agent("kept"))
    with pytest.raises(grpc.RpcError) as refused:
        agents.delete(agent_pb2.AgentId(value=agent.metadata.id), metadata=((DRY_RUN, "please"),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stigmer-dry-run" in str(refused.value.details())
    assert agent_grpc.AgentQueryControllerStub(stigmer_channel).get(agent_pb2.AgentId(value=agent.metadata.id)) == agent
