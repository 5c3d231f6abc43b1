"""The SDK round trip against the real daemon process, and the published
services visible through its server reflection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ai.stigmer.agentic.agent.v1 import io_pb2
from daemon import Daemon
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from stigmer import AgentInput, ResourceRef, StigmerClient, is_not_found

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    started = Daemon(tmp_path / "data")
    yield started
    started.kill()


def _services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        return {s.name for r in responses for s in r.list_services_response.service}


def test_the_sdk_round_trip_against_the_daemon(daemon: Daemon) -> None:
    assert daemon.address.startswith("127.0.0.1:") and not daemon.address.endswith(":0")
    assert "StigmerAgent" in daemon.banner and "StigmerSession" in daemon.banner
    with StigmerClient("sk_test_local_daemon", base_url=daemon.address, insecure=True) as client:
        created = client.agents.create(
            AgentInput(name="Support Bot", org="acme", instructions="Answer kindly, always.")
        )
        assert client.agents.get(created.metadata.id) == created
        assert client.agents.get_by_reference(ResourceRef(org="acme", slug="support-bot")) == created
        listed = client.agents.list(io_pb2.ListAgentsRequest(org="acme"))
        assert [a.metadata.id for a in listed.entries] == [created.metadata.id]
        assert client.agents.delete(created.metadata.id) == created
        with pytest.raises(Exception) as caught:
            client.agents.get(created.metadata.id)
        assert is_not_found(caught.value)
    assert daemon.stop() == 0


def test_reflection_lists_the_published_services_beside_ours(daemon: Daemon) -> None:
    found = _services(daemon.address)
    assert {
        "ai.stigmer.agentic.agent.v1.AgentCommandController",
        "ai.stigmer.agentic.agent.v1.AgentQueryController",
        "ai.stigmer.agentic.session.v1.SessionCommandController",
        "ai.stigmer.agentic.session.v1.SessionQueryController",
        "stigmer.agentic.agent.v1.AgentCommandController",
    } <= found
