"""Streams sending the same event share one copy of it.

A write of a large object with many watches open made every stream parse the
object and build and serialize its own message at once, on its own thread: a
2 MB workflow and 200 watches took a daemon from 80 MB to 1.3 GB of memory.
Each view of an event (its serialized message, its parsed object) is now
built once, by the first stream that needs it, and handed to the others.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.pipeline.events import SharedViews
from stigmer_core.server import Server

STREAMS = 12
FILTERED = 6
BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK


class CountingViews(SharedViews):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.built: collections.Counter[str] = collections.Counter()

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        def counted() -> tuple[Any, int]:
            self.built[key[0]] += 1  # type: ignore[index]
            return build()

        return super().get(key, counted)


@pytest.fixture
def served(tmp_path: Path, stigmer_store: str | None) -> Iterator[tuple[Application, grpc.Channel]]:
    app = Application.open(tmp_path / "data", durable=False, store=stigmer_store)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield app, channel
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def _first_event(stream: Any) -> watch_pb2.WatchEvent:
    for event in stream:
        if event.type != BOOKMARK:
            return event
    raise AssertionError("the stream ended before any event")


def test_many_watches_of_a_large_write_build_its_message_once(served: tuple[Application, grpc.Channel]) -> None:
    app, channel = served
    views = CountingViews(app.events.settings.cache_bytes)
    app.events.views = views
    watch = watch_pb2_grpc.WatchStub(channel)
    streams = [watch.Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=60) for _ in range(STREAMS)]
    # a watch scoped to an org reads the object to match it: parsed once too
    streams += [watch.Watch(watch_pb2.WatchRequest(kind="Agent", org="local"), timeout=60) for _ in range(FILTERED)]
    for stream in streams:
        assert next(stream).type == BOOKMARK  # open before the write
    agent = agent_pb2.Agent()
    agent.metadata.name = "large"
    agent.spec.instructions = "x" * 250_000
    made = agent_grpc.AgentCommandControllerStub(channel).create(agent, timeout=60)
    received = [_first_event(stream) for stream in streams]
    for stream in streams:
        stream.cancel()
    assert {event.id for event in received} == {made.metadata.id}
    assert {event.SerializeToString() for event in received} == {received[0].SerializeToString()}
    sent = agent_pb2.Agent.FromString(received[0].object.value)
    assert sent.spec.instructions == agent.spec.instructions
    assert views.built == {"watch": 1, "parsed": 1}


def test_the_views_kept_are_bounded_in_bytes_and_the_newest_is_always_kept() -> None:
    views = SharedViews(max_bytes=100)
    built: list[str] = []

    def view(key: str, size: int) -> str:
        return views.get(key, lambda: (built.append(key), (key, size))[1])  # type: ignore[func-returns-value]

    assert view("a", 60) == "a" and view("b", 30) == "b" and view("a", 60) == "a"
    assert built == ["a", "b"]  # kept: built once each
    view("c", 50)  # past the bound: the least recently used goes ("b"), then "a"
    assert view("c", 50) == "c" and built == ["a", "b", "c"]
    view("b", 30)
    assert built == ["a", "b", "c", "b"]
    view("huge", 500)  # larger than the bound: kept alone, still shared
    view("huge", 500)
    assert built.count("huge") == 1
