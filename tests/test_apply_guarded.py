"""A guarded write (one carrying the ``metadata.resource_version`` it read) names a version of an
object that must still be stored. Another client's delete committed between the read and the
write used to be undone by an apply: it created the object again under the same id (or slug)
and answered OK, both clients told they had succeeded. Both engines, both paths."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.status import from_rpc_error


def _agent(name: str, description: str = "") -> agent_pb2.Agent:
    return agent_pb2.Agent(
        metadata=metadata_pb2.ApiResourceMetadata(name=name), spec=agent_pb2.AgentSpec(description=description)
    )


def _refusal(call: Any, code: grpc.StatusCode) -> Any:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == code, refused.value.details()
    return from_rpc_error(refused.value)


def _read_then_deleted(channel: grpc.Channel) -> tuple[Any, agent_pb2.Agent]:
    """An agent as one client read it, deleted by another since, and the edit the first makes."""
    agents = agent_grpc.AgentCommandControllerStub(channel)
    made = agents.create(_agent("Helper", "first"))
    read = agent_grpc.AgentQueryControllerStub(channel).get(agent_pb2.AgentId(value=made.metadata.id))
    agents.delete(agent_pb2.AgentId(value=made.metadata.id))
    read.spec.description = "edited"
    return agents, read


def _absent(app: Application) -> None:
    assert not list(KindClient(app.channel(), app.registry.kind("Agent")).list_all(org="")), "nothing came back"
    assert not list(KindClient(app.channel(), app.registry.kind("AgentInstance")).list_all(org=""))


@pytest.mark.parametrize("by", ["id", "slug"])
def test_a_guarded_apply_of_an_object_deleted_since_it_was_read_is_refused(
    stigmer_app: Application, stigmer_channel: grpc.Channel, by: str
) -> None:
    agents, read = _read_then_deleted(stigmer_channel)
    version = read.metadata.resource_version
    assert version
    if by == "slug":
        read.metadata.ClearField("id")
    error = _refusal(lambda: agents.apply(read), grpc.StatusCode.NOT_FOUND)
    assert "is not stored" in error.message and "without metadata.resource_version" in error.message, error
    assert error.reason == "NOT_FOUND"
    assert error.metadata["kind"] == "Agent" and error.metadata["resourceVersion"] == str(version)
    if by == "id":
        assert error.metadata["id"] == read.metadata.id
    else:
        assert (error.metadata["slug"], error.metadata["org"]) == ("helper", read.metadata.org)
    _absent(stigmer_app)
    # the same document without the version is an unguarded apply: it creates the object again
    read.metadata.resource_version = 0
    again = agents.apply(read)
    assert again.spec.description == "edited"


def test_a_guarded_update_of_an_object_deleted_since_it_was_read_says_so(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    agents, read = _read_then_deleted(stigmer_channel)
    error = _refusal(lambda: agents.update(read), grpc.StatusCode.NOT_FOUND)
    assert "is not stored" in error.message, error
    assert error.metadata["resourceVersion"] == str(read.metadata.resource_version)
    read.metadata.resource_version = 0  # unguarded: still nothing to update
    _refusal(lambda: agents.update(read), grpc.StatusCode.NOT_FOUND)
    _absent(stigmer_app)


def test_a_guarded_apply_of_a_stored_object_updates_it_or_is_stale(stigmer_channel: grpc.Channel) -> None:
    """What `stigmer get -o yaml | stigmer apply -f -` sends: current, it updates; stale, ABORTED."""
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    read = agents.create(_agent("Helper", "first"))
    read.spec.description = "edited"
    written = agents.apply(read)
    assert written.spec.description == "edited" and written.metadata.id == read.metadata.id
    read.spec.description = "late"
    error = _refusal(lambda: agents.apply(read), grpc.StatusCode.ABORTED)
    assert error.reason == "STALE_VERSION"


def test_a_create_carrying_a_resource_version_is_refused_naming_the_field(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    sent = _agent("Helper")
    sent.metadata.resource_version = 7
    error = _refusal(lambda: agents.create(sent), grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.violations] == ["metadata.resource_version"], error
    _absent(stigmer_app)
    sent.metadata.resource_version = 0
    assert agents.create(sent).metadata.resource_version > 0
