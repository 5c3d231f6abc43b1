"""The official stigmer-sdk client, unchanged, against the published Agent API
served by the generic controllers."""

from __future__ import annotations

import grpc
import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2, io_pb2, query_pb2_grpc, version_pb2
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource.apiresourcekind import api_resource_kind_pb2 as kinds
from stigmer import AgentInput, ErrorCode, ResourceRef, StigmerClient, StigmerError, is_not_found
from stigmer_core.api.agentic.agent.v1 import agent_pb2 as first_party
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as first_party_grpc
from stigmer_core.server import Server

pytestmark = pytest.mark.timeout(60)
INSTRUCTIONS = "Answer support tickets kindly."


def _agent(name: str, org: str = "acme", **spec: str) -> AgentInput:
    return AgentInput(name=name, org=org, instructions=spec.pop("instructions", INSTRUCTIONS), **spec)


def _error(call: object, *args: object) -> StigmerError:
    with pytest.raises(StigmerError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_create_get_by_reference_list_delete(client: StigmerClient) -> None:
    created = client.agents.create(_agent("Support Bot", description="Answers tickets"))
    assert created.kind == "Agent" and created.api_version == "agentic.stigmer.ai/v1"
    assert created.metadata.slug == "support-bot" and created.metadata.org == "acme"
    assert created.metadata.id.startswith("pagt-")
    assert created.spec.description == "Answers tickets" and created.spec.instructions == INSTRUCTIONS
    assert created.status.audit.spec_audit.created_at.seconds > 0

    assert client.agents.get(created.metadata.id) == created
    assert client.agents.get_by_reference(ResourceRef(org="acme", slug="support-bot")) == created

    other = client.agents.create(_agent("Triage", org="acme"))
    client.agents.create(_agent("Elsewhere", org="beta"))
    listed = client.agents.list(io_pb2.ListAgentsRequest(org="acme"))
    assert [a.metadata.slug for a in listed.entries] == ["support-bot", "triage"]
    paged = list(client.agents.list_all(io_pb2.ListAgentsRequest(org="acme", page_size=1)))
    assert [a.metadata.id for a in paged] == [created.metadata.id, other.metadata.id]

    assert client.agents.delete(created.metadata.id) == created
    assert is_not_found(_error(client.agents.get, created.metadata.id))
    assert is_not_found(_error(client.agents.get_by_reference, ResourceRef(org="acme", slug="support-bot")))
    assert [a.metadata.slug for a in client.agents.list(io_pb2.ListAgentsRequest(org="acme")).entries] == ["triage"]


def test_published_field_rules_are_enforced(client: StigmerClient) -> None:
    error = _error(client.agents.create, _agent("Terse", instructions="short"))
    assert error.code is ErrorCode.INVALID_ARGUMENT and "instructions" in str(error)
    client.agents.create(_agent("Taken"))
    assert _error(client.agents.create, _agent("Taken")).code is ErrorCode.ALREADY_EXISTS


def test_references_of_another_kind_are_refused_not_crashed(client: StigmerClient, stigmer_server: Server) -> None:
    client.agents.create(_agent("Support Bot"))
    with grpc.insecure_channel(stigmer_server.address) as channel:
        queries = query_pb2_grpc.AgentQueryControllerStub(channel)
        for kind, shown in ((kinds.session, "'session'"), (999, "'999'")):
            ref = resource_io.ApiResourceReference(org="acme", slug="support-bot", kind=kind)
            with pytest.raises(grpc.RpcError) as caught:
                queries.getByReference(ref, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert shown in caught.value.details() and "StigmerAgent" in caught.value.details()
        unspecified = resource_io.ApiResourceReference(org="acme", slug="support-bot")
        assert queries.getByReference(unspecified, timeout=10).metadata.slug == "support-bot"


def test_update_honours_the_mask(client: StigmerClient) -> None:
    created = client.agents.create(_agent("Support Bot", description="before", icon_url="https://x/icon.png"))
    changed = api_pb2.Agent()
    changed.CopyFrom(created)
    changed.spec.description = "after"
    changed.spec.icon_url = "https://x/other.png"
    changed.metadata.labels["tier"] = "gold"
    updated = client.agents.update(changed, ["spec.description", "metadata.labels"])
    assert updated.spec.description == "after" and updated.spec.icon_url == "https://x/icon.png"
    assert dict(updated.metadata.labels) == {"tier": "gold"}
    assert client.agents.get(created.metadata.id) == updated
    assert updated.status.audit.spec_audit.updated_at.ToNanoseconds() >= (
        created.status.audit.spec_audit.updated_at.ToNanoseconds()
    )

    refused = _error(client.agents.update, changed, ["metadata.org"])
    assert refused.code is ErrorCode.INVALID_ARGUMENT and "metadata.org" in str(refused)
    bad = api_pb2.Agent()
    bad.CopyFrom(updated)
    bad.metadata.labels["tier"] = "not valid!"
    invalid = _error(client.agents.update, bad, ["metadata.labels"])
    assert invalid.code is ErrorCode.INVALID_ARGUMENT
    assert client.agents.get(created.metadata.id) == updated


def test_update_visibility_is_served_by_a_custom_operation(client: StigmerClient) -> None:
    created = client.agents.create(_agent("Support Bot"))
    request = resource_io.UpdateVisibilityInput(resource_id=created.metadata.id, visibility=2)
    shown = client.agents.update_visibility(request)
    assert shown.metadata.visibility == 2 and shown.spec == created.spec
    assert client.agents.get(created.metadata.id).metadata.visibility == 2
    missing = resource_io.UpdateVisibilityInput(resource_id="pagt-01arz3ndektsv4rrffq69g5fav", visibility=2)
    assert is_not_found(_error(client.agents.update_visibility, missing))


@pytest.mark.parametrize(
    ("method", "request_type", "rpc"),
    [
        ("rename", resource_io.RenameInput, "AgentCommandController.rename"),
        ("tag_version", version_pb2.TagAgentVersionInput, "AgentCommandController.tagVersion"),
        ("list_versions", version_pb2.ListAgentVersionsInput, "AgentQueryController.listVersions"),
        ("get_version", version_pb2.GetAgentVersionInput, "AgentQueryController.getVersion"),
    ],
)
def test_unserved_methods_answer_unimplemented_naming_the_method(
    client: StigmerClient, method: str, request_type: type, rpc: str
) -> None:
    error = _error(getattr(client.agents, method), request_type())
    assert error.grpc_code == grpc.StatusCode.UNIMPLEMENTED
    assert f"ai.stigmer.agentic.agent.v1.{rpc}" in str(error)


def test_published_and_first_party_agents_live_apart(client: StigmerClient, stigmer_server: Server) -> None:
    published = client.agents.create(_agent("Support Bot", org="local"))
    with grpc.insecure_channel(stigmer_server.address) as channel:
        ours = first_party_grpc.AgentCommandControllerStub(channel).create(
            first_party.Agent(metadata={"name": "Support Bot"}), timeout=10
        )
        listed = first_party_grpc.AgentQueryControllerStub(channel).list(first_party.ListAgentsRequest(), timeout=10)
    assert ours.metadata.slug == published.metadata.slug == "support-bot"
    assert [a.metadata.id for a in listed.entries] == [ours.metadata.id]
    assert [a.metadata.id for a in client.agents.list(io_pb2.ListAgentsRequest(org="local")).entries] == [
        published.metadata.id
    ]
