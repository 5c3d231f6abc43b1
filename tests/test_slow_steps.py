"""A slow step of a third-party package holds up only its own call, and a write whose call
ended while its steps ran is not committed.

On LMDB the daemon serves on grpc's asyncio server, and a write ran its steps before the
transaction on the event loop: a step waiting on anything (an HTTP call, a slow parse) held
up every call of the daemon, health checks included. And nothing looked at the call again
before its transaction, so a create whose client had given up (DEADLINE_EXCEEDED) was still
committed, and the client's retry met ALREADY_EXISTS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.hookspecs import hookimpl
from stigmer_core.kinds.declaration import KindDeclaration
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import step
from stigmer_core.plugins import plugin_manager
from stigmer_core.store.lmdb_store import LmdbStore
from tests.plugin_server_support import named_agent, served_with

ANSWER = 30.0  # generous: these calls must answer at all, not answer fast


class Gate:
    """A PREPARE step that waits, for agents named 'slow*', until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

        @step(Phase.PREPARE, name="waits")
        def waits(ctx: Any) -> None:
            if ctx.request.metadata.name.startswith("slow"):
                self.entered.set()
                assert self.release.wait(ANSWER)
                self.returned.set()

        self.step = waits

    @hookimpl
    def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
        return [self.step] if kind.name == "Agent" and operation == "create" else []


@pytest.fixture(params=[0, 2], ids=["asyncio-server", "sync-server"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Gate, grpc.Channel]]:
    gate = Gate()
    with served_with(tmp_path, gate, request.param) as channel:
        try:
            yield gate, channel
        finally:
            gate.release.set()  # before the server stops: a step still waiting would hold it


def test_a_waiting_step_holds_up_only_its_own_call(served: tuple[Gate, grpc.Channel]) -> None:
    gate, channel = served
    commands = agent_grpc.AgentCommandControllerStub(channel)
    waiting = commands.create.future(named_agent("slow one"), timeout=ANSWER)
    assert gate.entered.wait(ANSWER)
    # while the step waits: health, a read and another write all answer
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=ANSWER)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    other = commands.create(named_agent("quick one"), timeout=ANSWER)
    assert agent_grpc.AgentQueryControllerStub(channel).get(agent_pb2.AgentId(value=other.metadata.id), timeout=ANSWER)
    assert not waiting.done()
    gate.release.set()
    assert waiting.result(timeout=ANSWER).metadata.name == "slow one"


def test_a_write_whose_call_ended_while_its_steps_ran_is_not_committed(served: tuple[Gate, grpc.Channel]) -> None:
    gate, channel = served
    commands = agent_grpc.AgentCommandControllerStub(channel)
    with pytest.raises(grpc.RpcError) as late:
        commands.create(named_agent("slow and late"), timeout=0.5)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gate.entered.is_set()
    time.sleep(1.0)  # the server's deadline of the call (from the grpc-timeout header) is past too
    gate.release.set()
    assert gate.returned.wait(ANSWER)
    commands.create(named_agent("barrier"), timeout=ANSWER)  # queued behind whatever the late call wrote
    listed = agent_grpc.AgentQueryControllerStub(channel).list(agent_pb2.ListAgentsRequest(), timeout=ANSWER)
    assert [a.metadata.name for a in listed.entries] == ["barrier"]
    # and the client's retry is a plain create, not ALREADY_EXISTS
    assert commands.create(named_agent("slow and late"), timeout=ANSWER).metadata.name == "slow and late"


def test_in_process_a_call_keeps_its_deadline_as_over_the_network(tmp_path: Path) -> None:
    """The in-process channel took a unary call's ``timeout`` and ignored it: a write whose
    caller's deadline passed while its steps ran was committed and answered, where the network
    answers DEADLINE_EXCEEDED and writes nothing; a timeout of zero ran the call."""
    gate = Gate()
    pm = plugin_manager(plugins=[gate])
    with Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app:
        channel = app.channel()
        commands = agent_grpc.AgentCommandControllerStub(channel)
        queries = agent_grpc.AgentQueryControllerStub(channel)
        with pytest.raises(grpc.RpcError) as at_once:
            commands.create(named_agent("never"), timeout=0)
        assert at_once.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        releaser = threading.Timer(0.6, gate.release.set)
        releaser.start()
        try:
            with pytest.raises(grpc.RpcError) as late:
                commands.create(named_agent("slow and late"), timeout=0.2)
        finally:
            releaser.join()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert gate.returned.is_set()
        assert list(queries.list(agent_pb2.ListAgentsRequest(), timeout=ANSWER).entries) == []
        made = commands.create(named_agent("slow and in time"), timeout=ANSWER)
        assert (
            queries.get(agent_pb2.AgentId(value=made.metadata.id), timeout=ANSWER).metadata.name == "slow and in time"
        )
