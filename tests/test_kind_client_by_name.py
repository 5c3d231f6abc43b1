"""A program calling a server makes a ``KindClient`` from a kind's name, with no application of its
own, and lists by the kind's own filters: it needed ``app.registry.kind(...)`` (a store opened in
process) for the first, and a hand-built list request for the second (``list_page`` took only
``org`` and ``labels``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.kind_client import KindClient, installed_kinds
from stigmer_core.server import Server
from tests.agent_execution_support import IN_PROGRESS, Kinds


@pytest.fixture
def address(tmp_path: Path) -> Iterator[tuple[Application, str]]:
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0", max_workers=2)
        server.start()
        try:
            yield app, server.address
        finally:
            server.stop(grace=1)


def test_a_client_by_name_lists_by_the_kinds_own_filters(address: tuple[Application, str]) -> None:
    app, where = address
    kinds = Kinds.on(app, app.channel())
    agent = kinds.agent()
    runs = [kinds.execution(f"run-{n}", agent_id=agent.metadata.id) for n in range(3)]
    kinds.report(runs[1].metadata.id, IN_PROGRESS, "started")
    with grpc.insecure_channel(where) as channel:
        executions = KindClient(channel, "agentexecutions")  # a plural alias, as the CLI takes it
        assert executions.kind is installed_kinds().kind("AgentExecution")
        pending = executions.list_page(filters={"phase": "EXECUTION_PENDING"})
        assert sorted(run.metadata.id for run in pending.entries) == sorted(
            run.metadata.id for run in (runs[0], runs[2])
        )
        running = list(executions.list_all(filters={"phase": IN_PROGRESS}, page_size=1))
        assert [run.metadata.id for run in running] == [runs[1].metadata.id]
        assert len(list(executions.list_all())) == 3
        with pytest.raises(ValueError, match='has no "colour" field'):
            executions.list_page(filters={"colour": "red"})
        assert KindClient(channel, "Agent").get(agent.metadata.id).metadata.slug == agent.metadata.slug
    with pytest.raises(KeyError, match=r"unknown kind 'gizmo' \(served: .*AgentExecution"):
        KindClient(app.channel(), "gizmo")


def test_a_client_by_resource_class_calls_that_kind(address: tuple[Application, str]) -> None:
    """``KindClient(channel, agent_pb2.Agent)`` is the Agent kind's client (and typed so: see
    test_kind_client_types); a message class no installed kind has is a KeyError naming the kinds."""
    from google.protobuf import struct_pb2

    from stigmer_core.api.agentic.agent.v1 import agent_pb2

    _, where = address
    with grpc.insecure_channel(where) as channel:
        agents = KindClient(channel, agent_pb2.Agent)
        assert agents.kind is installed_kinds().kind("Agent")
        made = agents.create(agent_pb2.Agent(metadata={"name": "by class"}, spec={"instructions": "hi"}))
        assert agents.get(made.metadata.id).metadata.slug == "by-class"
        with pytest.raises(KeyError, match=r"google\.protobuf\.Struct .*installed kinds: Agent, "):
            KindClient(channel, struct_pb2.Struct)


def test_a_client_of_a_message_instead_of_its_class_says_so() -> None:
    """``KindClient(channel, agent_pb2.Agent())`` raised a bare ``AttributeError: methods``."""
    from stigmer_core.api.agentic.agent.v1 import agent_pb2

    with grpc.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(TypeError, match=r"give the class, Agent, not an instance of it"):
            KindClient(channel, agent_pb2.Agent())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not int"):
            KindClient(channel, 3)  # type: ignore[arg-type]
