"""Agent and AgentInstance end to end, on both paths."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.agentic.agentinstance.v1 import service_pb2_grpc as instance_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import key_families


def _agent(name: str = "Support Bot", **spec: object) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name), spec=agent_pb2.AgentSpec(**spec))  # type: ignore[arg-type]


def test_create_makes_default_instance_in_same_transaction(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    commits = stigmer_app.store.commits  # type: ignore[attr-defined]
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    instances = instance_grpc.AgentInstanceQueryControllerStub(stigmer_channel)
    env = metadata_pb2.ApiResourceReference(kind="Environment", slug="prod")
    agent = agents.create(_agent(instructions="be kind", environment_refs=[env]))
    assert stigmer_app.store.commits == commits + 1  # type: ignore[attr-defined]
    assert agent.status.default_instance_id.startswith("ain-")
    instance = instances.get(agentinstance_pb2.AgentInstanceId(value=agent.status.default_instance_id))
    assert instance.spec.agent_id == agent.metadata.id
    assert instance.metadata.org == agent.metadata.org == "local"
    assert list(instance.spec.environment_refs) == [env]
    assert [(o.kind, o.id) for o in instance.metadata.owner_references] == [("Agent", agent.metadata.id)]
    # both objects were written at one revision
    assert instance.metadata.resource_version == agent.metadata.resource_version


def test_delete_cascades_to_every_owned_instance(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    instance_cmd = instance_grpc.AgentInstanceCommandControllerStub(stigmer_channel)
    instance_query = instance_grpc.AgentInstanceQueryControllerStub(stigmer_channel)
    keep = agents.create(_agent("Keeper"))
    agent = agents.create(_agent("Doomed"))
    extra = instance_cmd.create(
        agentinstance_pb2.AgentInstance(
            metadata=metadata_pb2.ApiResourceMetadata(name="extra", labels={"tier": "a"}),
            spec=agentinstance_pb2.AgentInstanceSpec(agent_id=agent.metadata.id),
        )
    )
    before = key_families(stigmer_app.store)
    deleted = agents.delete(agent_pb2.AgentId(value=agent.metadata.id))
    assert deleted.metadata.id == agent.metadata.id
    for gone in (agent.status.default_instance_id, extra.metadata.id):
        with pytest.raises(grpc.RpcError) as err:
            instance_query.get(agentinstance_pb2.AgentInstanceId(value=gone))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    after = key_families(stigmer_app.store)
    # exactly one agent and two instances left the object, slug, label-index and ownership families
    assert before["o/agents"] - after["o/agents"] == 1
    assert before["o/agentinstances"] - after["o/agentinstances"] == 2
    assert before["s/agentinstances"] - after["s/agentinstances"] == 2
    assert after["x/agentinstances"] == 0
    assert after["r/" + agent.metadata.id] == 0
    assert after["r/" + keep.metadata.id] == 1
    survivor = instance_query.get(agentinstance_pb2.AgentInstanceId(value=keep.status.default_instance_id))
    assert survivor.spec.agent_id == keep.metadata.id


def test_default_instance_cannot_be_deleted_alone(stigmer_channel: grpc.Channel) -> None:
    agent = agent_grpc.AgentCommandControllerStub(stigmer_channel).create(_agent())
    with pytest.raises(grpc.RpcError) as err:
        instance_grpc.AgentInstanceCommandControllerStub(stigmer_channel).delete(
            agentinstance_pb2.AgentInstanceId(value=agent.status.default_instance_id)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "default instance" in err.value.details()
    refused = from_rpc_error(err.value)  # a client tells it from other refusals by its reason
    assert refused.reason == "DEFAULT_INSTANCE"
    assert refused.metadata == {
        "kind": "AgentInstance",
        "id": agent.status.default_instance_id,
        "agentId": agent.metadata.id,
    }


def test_instance_needs_an_agent_of_its_org(stigmer_channel: grpc.Channel) -> None:
    agent = agent_grpc.AgentCommandControllerStub(stigmer_channel).create(_agent())
    instances = instance_grpc.AgentInstanceCommandControllerStub(stigmer_channel)
    for org, agent_id in (("local", "agt-01arz3ndektsv4rrffq69g5fav"), ("other", agent.metadata.id)):
        with pytest.raises(grpc.RpcError) as err:
            instances.create(
                agentinstance_pb2.AgentInstance(
                    metadata=metadata_pb2.ApiResourceMetadata(name="orphan", org=org),
                    spec=agentinstance_pb2.AgentInstanceSpec(agent_id=agent_id),
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "spec.agent_id" in err.value.details()


def test_update_keeps_status_and_immutable_metadata(stigmer_channel: grpc.Channel) -> None:
    commands = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    created = commands.create(_agent(description="v1"))
    change = agent_pb2.Agent()
    change.CopyFrom(created)
    change.spec.description = "v2"
    change.status.default_instance_id = "ain-forged"
    change.metadata.ClearField("created_at")
    updated = commands.update(change)
    assert updated.spec.description == "v2"
    assert updated.status.default_instance_id == created.status.default_instance_id
    assert updated.metadata.created_at == created.metadata.created_at
    assert updated.metadata.resource_version > created.metadata.resource_version
    # the version we read is now stale
    with pytest.raises(grpc.RpcError) as err:
        commands.update(change)
    assert err.value.code() == grpc.StatusCode.ABORTED
    moved = agent_pb2.Agent()
    moved.CopyFrom(updated)
    moved.metadata.slug = "elsewhere"
    with pytest.raises(grpc.RpcError) as err:
        commands.update(moved)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    moved.CopyFrom(updated)
    moved.metadata.org = "other"
    with pytest.raises(grpc.RpcError) as err:
        commands.update(moved)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"names the agent stored in org '{updated.metadata.org}'" in err.value.details(), err.value.details()


def test_apply_is_idempotent(stigmer_channel: grpc.Channel) -> None:
    commands = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    first = commands.apply(_agent("Applied", description="same"))
    again = commands.apply(_agent("Applied", description="same"))
    assert again == first
    changed = commands.apply(_agent("Applied", description="new"))
    assert changed.metadata.id == first.metadata.id
    assert changed.metadata.resource_version > first.metadata.resource_version


def test_recreating_an_agent_with_its_id_recreates_its_default_instance_id(stigmer_channel: grpc.Channel) -> None:
    commands = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    first = commands.create(_agent("Restored"))
    commands.delete(agent_pb2.AgentId(value=first.metadata.id))
    again = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="Restored", id=first.metadata.id))
    restored = commands.create(again)
    assert restored.metadata.id == first.metadata.id
    assert restored.status.default_instance_id == first.status.default_instance_id
    other = commands.create(_agent("Other"))
    assert other.status.default_instance_id != first.status.default_instance_id


def test_a_default_instance_whose_slug_is_taken_takes_the_fallback_and_refuses_when_both_are(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    instance_cmd = instance_grpc.AgentInstanceCommandControllerStub(stigmer_channel)
    instance_query = instance_grpc.AgentInstanceQueryControllerStub(stigmer_channel)
    owner = agents.create(_agent("Owner"))

    def by_hand(slug: str) -> None:
        instance_cmd.create(
            agentinstance_pb2.AgentInstance(
                metadata=metadata_pb2.ApiResourceMetadata(name=slug, slug=slug),
                spec=agentinstance_pb2.AgentInstanceSpec(agent_id=owner.metadata.id),
            )
        )

    by_hand("helper-default")
    helper = agents.create(_agent("Helper"))
    instance = instance_query.get(agentinstance_pb2.AgentInstanceId(value=helper.status.default_instance_id))
    assert instance.metadata.slug == f"helper-default-{helper.metadata.id[-8:]}"

    # an agent created with its id (an import) has a known fallback: both slugs taken refuses it whole
    agent_id = "agt-01jz000000000000000000aaaa"
    by_hand("twice-default")
    by_hand(f"twice-default-{agent_id[-8:]}")
    before = key_families(stigmer_app.store)
    with pytest.raises(grpc.RpcError) as refused:
        agents.create(
            agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="Twice", id=agent_id), spec=agent_pb2.AgentSpec())
        )
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"'twice-default-{agent_id[-8:]}' already exists" in (refused.value.details() or "")
    assert key_families(stigmer_app.store) == before
