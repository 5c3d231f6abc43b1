"""Bad input: INVALID_ARGUMENT naming the field, nothing written, server still up."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application, from_rpc_error, status
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import raw_keys

CREATE = "/stigmer.agentic.agent.v1.AgentCommandController/create"


def _agent(**metadata: object) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(**metadata))  # type: ignore[arg-type]


CASES = [
    pytest.param(_agent(slug="x"), "metadata.name", id="missing-name"),
    pytest.param(agent_pb2.Agent(spec=agent_pb2.AgentSpec(description="x")), "metadata", id="missing-metadata"),
    pytest.param(_agent(name="x", slug="Not A Slug"), "metadata.slug", id="bad-slug"),
    pytest.param(_agent(name="x" * 254), "metadata.name", id="oversized-name"),
    pytest.param(
        agent_pb2.Agent(
            metadata=metadata_pb2.ApiResourceMetadata(name="x"), spec=agent_pb2.AgentSpec(description="d" * 4097)
        ),
        "spec.description",
        id="oversized-field",
    ),
    pytest.param(_agent(name="x", labels={"ok": "bad value!"}), 'metadata.labels["ok"]', id="bad-label"),
    pytest.param(_agent(name="!!!"), "metadata.name", id="name-without-slug"),
    pytest.param(_agent(name="x", id="not-an-id"), "metadata.id", id="foreign-id"),
]


@pytest.mark.parametrize(("agent", "field"), CASES)
def test_invalid_create_names_the_field(
    stigmer_app: Application, stigmer_channel: grpc.Channel, agent: agent_pb2.Agent, field: str
) -> None:
    before = raw_keys(stigmer_app.store)
    with pytest.raises(grpc.RpcError) as err:
        agent_grpc.AgentCommandControllerStub(stigmer_channel).create(agent)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in from_rpc_error(err.value).violations]  # type: ignore[attr-defined]
    assert raw_keys(stigmer_app.store) == before


def test_garbage_bytes_are_invalid_argument(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    before = raw_keys(stigmer_app.store)
    raw = stigmer_channel.unary_unary(CREATE)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x1a\xff\xff\xff\xff\x0f"):
        with pytest.raises(grpc.RpcError) as err:
            raw(garbage)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in from_rpc_error(err.value).violations]  # type: ignore[attr-defined]
        assert fields and fields[0] in ("(request)", "metadata", "metadata.name")
    assert raw_keys(stigmer_app.store) == before
    # the server still answers
    ok = agent_grpc.AgentCommandControllerStub(stigmer_channel).create(_agent(name="after garbage"))
    assert ok.metadata.slug == "after-garbage"


def test_oversized_message_is_resource_exhausted(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    huge = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="x", annotations={"blob": "a" * (5 << 20)}))
    with pytest.raises(grpc.RpcError) as err:
        agent_grpc.AgentCommandControllerStub(stigmer_channel).create(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raw_keys(stigmer_app.store, b"o/") == []


def test_bad_page_token_and_size(stigmer_channel: grpc.Channel) -> None:
    query = agent_grpc.AgentQueryControllerStub(stigmer_channel)
    for request, field in (
        (agent_pb2.ListAgentsRequest(page_token="bm90LW1pbmU"), "page_token"),
        (agent_pb2.ListAgentsRequest(page_size=100_000), "page_size"),
        (agent_pb2.ListAgentsRequest(page_size=-1), "page_size"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            query.list(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [v.field for v in from_rpc_error(err.value).violations]  # type: ignore[attr-defined]


def test_reference_to_another_kind_is_refused(stigmer_channel: grpc.Channel) -> None:
    query = agent_grpc.AgentQueryControllerStub(stigmer_channel)
    with pytest.raises(grpc.RpcError) as err:
        query.getByReference(metadata_pb2.ApiResourceReference(kind="AgentInstance", slug="x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        query.getByReference(metadata_pb2.ApiResourceReference())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_garbage_bytes_to_whoami_are_invalid_argument(stigmer_channel: grpc.Channel) -> None:
    whoami = stigmer_channel.unary_unary("/stigmer.iam.identity.v1.IdentityService/whoami")
    with pytest.raises(grpc.RpcError) as refused:
        whoami(b"\x1a\xff\xff\xff\xff\x0f", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid stigmer.iam.identity.v1.WhoamiRequest" in (refused.value.details() or "")


def test_a_request_breaking_a_rule_many_times_gets_a_short_answer_at_once(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """Every violation of 100,000 empty header names once took seconds to collect and made
    trailing metadata no client accepts (RESOURCE_EXHAUSTED on the client's side)."""
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    huge = _agent(name="huge")
    huge.spec.mcp_servers.add(name="tools").secret_headers.extend([""] * 100_000)
    with pytest.raises(grpc.RpcError) as refused:
        agents.create(huge, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in from_rpc_error(refused.value).violations]  # type: ignore[attr-defined]
    assert fields and len(fields) <= status.MAX_VIOLATIONS + 1
    assert fields[0].startswith("spec.mcp_servers[0].secret_headers")
    small = _agent(name="small")
    for _ in range(80):
        small.spec.mcp_servers.add(name="", url="")  # 80 servers: past max_items, and each nameless
    with pytest.raises(grpc.RpcError) as listed:
        agents.create(small, timeout=10)
    shown = from_rpc_error(listed.value).violations  # type: ignore[attr-defined]
    assert len(shown) == status.MAX_VIOLATIONS + 1 and shown[-1].description.endswith("more violations not listed")


def test_an_answer_with_many_long_violations_fits_what_every_client_takes(stigmer_channel: grpc.Channel) -> None:
    """50 violations of long non-ASCII label keys made 28 KiB of trailing metadata: past grpc's C
    core limit (8-16 KiB), so a Python or C++ client got its own error instead of the violations."""
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    wordy = _agent(name="wordy", labels={f"{'ключ-' * 24}{i} !": "ценность" * 8 for i in range(25)})
    with pytest.raises(grpc.RpcError) as refused:
        agents.create(wordy, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = from_rpc_error(refused.value).violations  # type: ignore[attr-defined]
    assert violations[0].field.startswith("metadata.labels")
    assert violations[-1].description.endswith("more violations not listed")
    details = [v for k, v in refused.value.trailing_metadata() or () if k == "grpc-status-details-bin"]  # type: ignore[attr-defined]
    assert len(details) == 1 and len(details[0]) <= status.MAX_DETAILS_BYTES
    message = (refused.value.details() or "").encode()  # type: ignore[attr-defined]
    assert sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message) <= status.MAX_MESSAGE_HEADER


def test_fields_the_server_does_not_define_are_not_stored(stigmer_channel: grpc.Channel) -> None:
    """Unknown fields were stored and answered back: never validated nor authorized here, they
    would be taken as checked by a later release that defines their numbers."""
    unknown = b"\xb8\x3e\x01"  # field 999, varint 1
    planted = _agent(name="planted")
    planted.spec.MergeFromString(unknown)
    planted.metadata.MergeFromString(unknown)
    assert unknown in planted.spec.SerializeToString()
    agents = agent_grpc.AgentCommandControllerStub(stigmer_channel)
    created = agents.create(planted, timeout=10)
    stored = agent_grpc.AgentQueryControllerStub(stigmer_channel).get(
        agent_pb2.AgentId(value=created.metadata.id), timeout=10
    )
    for answer in (created, stored):
        assert unknown not in answer.SerializeToString()
    again = agent_pb2.Agent()
    again.CopyFrom(stored)
    again.spec.MergeFromString(unknown)
    updated = agents.update(again, timeout=10)
    assert unknown not in updated.SerializeToString()
    assert updated.metadata.resource_version == stored.metadata.resource_version  # nothing else changed: no write


def test_a_slug_in_a_reference_field_is_told_the_field_holds_ids(stigmer_channel: grpc.Channel) -> None:
    """A slug where an id belongs was "workflow 'nightly' not found" while a workflow 'nightly' existed."""
    from stigmer_core.api.agentic.workflowinstance.v1 import service_pb2_grpc as instance_grpc
    from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2 as wi

    instance = wi.WorkflowInstance(metadata=metadata_pb2.ApiResourceMetadata(name="nightly run"))
    instance.spec.workflow_id = "nightly"
    with pytest.raises(grpc.RpcError) as refused:
        instance_grpc.WorkflowInstanceCommandControllerStub(stigmer_channel).create(instance, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = from_rpc_error(refused.value).violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["spec.workflow_id"]
    assert "is not a workflow id like 'wfl-<ulid>'" in violations[0].description


def test_a_label_selector_no_object_can_match_is_refused_naming_it(stigmer_channel: grpc.Channel) -> None:
    """A selector whose key no label can have (a typo: 'bad key!') answered an empty list, and a
    watch that never sent anything: it says what is wrong instead."""
    from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc

    agents = agent_grpc.AgentQueryControllerStub(stigmer_channel)
    with pytest.raises(grpc.RpcError) as listed:
        agents.list(agent_pb2.ListAgentsRequest(labels={"bad key!": "x"}), timeout=10)
    assert listed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(listed.value).violations] == ['labels["bad key!"]']  # type: ignore[attr-defined]
    stream = watch_pb2_grpc.WatchStub(stigmer_channel).Watch(
        watch_pb2.WatchRequest(kind="Agent", labels={"team": "bad value!"}), timeout=10
    )
    with pytest.raises(grpc.RpcError) as watched:
        next(stream)
    assert watched.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no agent can have these labels" in str(watched.value.details())
    assert list(agents.list(agent_pb2.ListAgentsRequest(labels={"app.kubernetes.io/name": "a"}), timeout=10).entries) == []
