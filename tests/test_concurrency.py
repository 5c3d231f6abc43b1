"""Racing writers: the store's single writer decides, nothing is half-written."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.server import Server
from stigmer_core.testing.inspect import raw_keys

RACERS = 8


def test_racing_creates_of_one_slug(stigmer_app: Application, stigmer_server: Server) -> None:
    barrier = threading.Barrier(RACERS)
    channel = grpc.insecure_channel(stigmer_server.address)
    stub = agent_grpc.AgentCommandControllerStub(channel)

    def race(i: int) -> grpc.StatusCode:
        request = agent_pb2.Agent(
            metadata=metadata_pb2.ApiResourceMetadata(name=f"racer {i}", slug="contested"),
            spec=agent_pb2.AgentSpec(description=str(i)),
        )
        barrier.wait(timeout=10)
        try:
            stub.create(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(RACERS) as pool:
        codes = list(pool.map(race, range(RACERS)))
    channel.close()
    assert codes.count(grpc.StatusCode.OK) == 1, codes
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == RACERS - 1, codes
    assert len(raw_keys(stigmer_app.store, b"o/agents/")) == 1
    assert raw_keys(stigmer_app.store, b"s/agents/local/") == [b"s/agents/local/contested"]
    # the winner's default instance is the only one
    assert len(raw_keys(stigmer_app.store, b"o/agentinstances/")) == 1


def test_concurrent_creates_share_commits(stigmer_app: Application, stigmer_server: Server) -> None:
    channel = grpc.insecure_channel(stigmer_server.address)
    stub = agent_grpc.AgentCommandControllerStub(channel)
    start = stigmer_app.store.commits  # type: ignore[attr-defined]
    calls = 64

    def create(i: int) -> str:
        agent = stub.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=f"agent {i}")), timeout=10)
        return agent.metadata.id  # type: ignore[no-any-return]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(create, range(calls)))
    channel.close()
    assert len(set(ids)) == calls
    assert len(raw_keys(stigmer_app.store, b"o/agents/")) == calls
    # every create is one durable commit at most; under concurrency several share one
    assert stigmer_app.store.commits - start <= calls  # type: ignore[attr-defined]
