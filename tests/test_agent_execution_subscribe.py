"""subscribe: every state in order, under a concurrent writer, across a
reconnect, for a slow reader, and ending after the terminal phase."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.protocol import Store
from tests.agent_execution_support import COMPLETED, IN_PROGRESS, PENDING, Kinds, code_of

TIMEOUT = 60.0


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _subscribe(kinds: Kinds, execution_id: str, after: int = 0) -> Any:
    request = ae.SubscribeAgentExecutionInput(execution_id=execution_id, after_revision=after)
    return kinds.executions.call("subscribe", request, timeout=TIMEOUT)


class Writer(threading.Thread):
    """Reports IN_PROGRESS, ``count`` progress messages, then COMPLETED; keeps every state it wrote."""

    def __init__(self, kinds: Kinds, execution_id: str, count: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.kinds, self.execution_id, self.count, self.pause = kinds, execution_id, count, pause
        self.written: list[Any] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.written.append(self.kinds.report(self.execution_id, IN_PROGRESS, "started"))
            for i in range(self.count):
                self.written.append(self.kinds.report(self.execution_id, 0, f"m{i}"))
                if self.pause:
                    time.sleep(self.pause)
            self.written.append(self.kinds.report(self.execution_id, COMPLETED, "done"))
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self) -> list[Any]:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the writer did not finish"
        assert self.error is None, self.error
        return self.written


def _versions(states: list[Any]) -> list[int]:
    return [s.metadata.resource_version for s in states]


def test_every_state_in_order_across_a_reconnect(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    first_stream = _subscribe(kinds, execution.metadata.id)
    first = next(first_stream)
    assert first == execution and first.status.phase == PENDING
    writer = Writer(kinds, execution.metadata.id, count=80)
    writer.start()
    seen = [first]
    for state in first_stream:
        seen.append(state)
        if len(seen) == 25:
            break
    first_stream.cancel()  # the client goes away mid-way ...
    resumed = list(_subscribe(kinds, execution.metadata.id, after=seen[-1].metadata.resource_version))
    written = writer.finish()  # ... and reconnects from the last revision it saw; the stream ends by itself
    states = seen + resumed
    assert _versions(states) == [execution.metadata.resource_version, *_versions(written)], "nothing missing or twice"
    assert states[1:] == written
    assert [len(s.status.messages) for s in states] == list(range(len(states)))
    assert states[-1].status.phase == COMPLETED


def test_a_slow_subscriber_misses_nothing(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    stream = _subscribe(kinds, execution.metadata.id)
    states = [next(stream)]
    writer = Writer(kinds, execution.metadata.id, count=120)
    writer.start()
    for state in stream:
        states.append(state)
        if len(states) % 10 == 0:
            time.sleep(0.05)  # the writer runs well ahead
    written = writer.finish()
    assert states[1:] == written


def test_resume_after_the_terminal_state_ends_at_once(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    kinds.report(execution.metadata.id, IN_PROGRESS)
    done = kinds.report(execution.metadata.id, COMPLETED)
    assert list(_subscribe(kinds, execution.metadata.id)) == [done]
    assert list(_subscribe(kinds, execution.metadata.id, after=done.metadata.resource_version)) == []
    assert list(_subscribe(kinds, execution.metadata.id, after=execution.metadata.resource_version))[-1] == done


def test_subscribe_ends_when_the_execution_is_deleted(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    stream = _subscribe(kinds, execution.metadata.id)
    assert next(stream) == execution
    started = kinds.report(execution.metadata.id, IN_PROGRESS)
    kinds.executions.delete(execution.metadata.id)
    assert list(stream) == [started]


def test_subscribe_refusals(kinds: Kinds) -> None:
    missing = "aex-01arz3ndektsv4rrffq69g5fav"
    assert code_of(lambda: list(_subscribe(kinds, missing))) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: list(_subscribe(kinds, ""))) == grpc.StatusCode.INVALID_ARGUMENT
    made = kinds.execution(agent_id=kinds.agent().metadata.id)
    ahead = made.metadata.resource_version + 1_000_000  # would wait for revisions that may never come
    assert code_of(lambda: list(_subscribe(kinds, made.metadata.id, ahead))) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def short_log_app(tmp_path: Path, stigmer_store: str | None) -> Iterator[tuple[Application, grpc.Channel]]:
    """A store that keeps only 50 revisions of events, over the network."""
    pm = plugin_manager()
    store: Store = (
        LmdbStore(tmp_path, durable=False, event_retention=50)
        if stigmer_store is None
        else PostgresStore(stigmer_store, durable=False, event_retention=50)
    )
    app = Application(build_registry(pm), store, pm, data_dir=tmp_path)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    yield app, channel
    channel.close()
    server.stop(grace=0)
    app.close()


def test_resume_beyond_the_log_is_told_to_reread(short_log_app: tuple[Application, grpc.Channel]) -> None:
    kinds = Kinds.on(*short_log_app)
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    kinds.report(execution.metadata.id, IN_PROGRESS)
    for i in range(60):
        kinds.report(execution.metadata.id, 0, f"m{i}")
    with pytest.raises(grpc.RpcError) as err:
        list(_subscribe(kinds, execution.metadata.id, after=execution.metadata.resource_version))
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "resume from its resource_version" in err.value.details()
    current = kinds.executions.get(execution.metadata.id)
    stream = _subscribe(kinds, execution.metadata.id, after=current.metadata.resource_version)
    done = kinds.report(execution.metadata.id, COMPLETED)
    assert list(stream) == [done]
