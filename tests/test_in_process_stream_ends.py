"""An in-process stream waiting for events ends when its call does: at its deadline, at a
``cancel()`` from another thread, and when its channel or client closes, as over the network.

Its thread used to look at its caller only every ``poll_seconds``: the reader of a watch given a
deadline of one second waited for the next look, and closing a client left its streams to end
UNAVAILABLE, as at a server's stop, where a grpc channel's end CANCELLED. The poll interval here is
a minute, so a stream that ends waits for nothing but its call's end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, connect
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store

BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
POLL_SECONDS = 60.0
ENDED_WITHIN = 20.0
"""A third of the poll interval: a reader still waiting then waited for the stream's next look."""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    pm = plugin_manager()
    settings = StreamSettings(poll_seconds=POLL_SECONDS, bookmark_seconds=2 * POLL_SECONDS)
    application = Application(build_registry(pm), open_store(tmp_path, durable=False), pm, streams=settings)
    yield application
    application.close()


def _open(channel: grpc.Channel, timeout: float = 2 * POLL_SECONDS) -> Any:
    stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=timeout)
    assert next(stream).type == BOOKMARK  # open, and its thread about to wait for events
    return stream


def _ending(stream: Any, end: Callable[[], object]) -> tuple[grpc.RpcError | None, float]:
    """What a reader waiting on ``stream`` is told once ``end`` runs on this thread, and how long it
    waited after; ``end`` runs once the reader has been waiting a moment."""
    told: list[grpc.RpcError] = []
    ended = threading.Event()

    def read() -> None:
        try:
            for _ in stream:
                pass
        except grpc.RpcError as exc:
            told.append(exc)
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)
    began = time.monotonic()
    end()
    assert ended.wait(ENDED_WITHIN), "the reader still waited for the stream's next look at its caller"
    return (told[0] if told else None), time.monotonic() - began


def test_a_waiting_stream_ends_at_its_deadline(app: Application) -> None:
    stream = _open(app.channel(), timeout=1.0)
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < ENDED_WITHIN


def test_a_cancel_from_another_thread_ends_the_waiting_reader(app: Application) -> None:
    stream = _open(app.channel())
    told, _ = _ending(stream, stream.cancel)
    assert told is not None and told.code() == grpc.StatusCode.CANCELLED
    assert told.details() == "Locally cancelled by application!"


def test_closing_the_channel_ends_its_streams_cancelled(app: Application) -> None:
    channel = app.channel()
    stream = _open(channel)
    told, _ = _ending(stream, channel.close)
    assert told is not None and (told.code(), told.details()) == (grpc.StatusCode.CANCELLED, "Channel closed!")
    other = _open(app.channel())  # another channel of the same application is not touched
    other.cancel()


def test_closing_a_connected_client_ends_its_streams_cancelled(tmp_path: Path) -> None:
    client = connect(data_dir=tmp_path / "store")
    stream = _open(client.channel)
    told, _ = _ending(stream, client.close)
    assert told is not None and told.code() == grpc.StatusCode.CANCELLED


def test_a_stream_that_ended_runs_no_callback_later(app: Application) -> None:
    """A callback given after the call ended is refused (False), as grpc refuses it, and never called."""
    stream = _open(app.channel(), timeout=0.5)
    with pytest.raises(grpc.RpcError):
        next(stream)
    context = stream._context
    called: list[int] = []
    assert context.add_callback(lambda: called.append(1)) is False
    context.cancel_call()
    assert called == []


def test_an_application_with_a_stream_open_closes_without_waiting_out_the_poll(tmp_path: Path) -> None:
    """Its event dispatcher waited for the next commit up to ``poll_seconds`` (a second by default)
    and the close waited for it: each ``connect()``ed client that had watched took a second to close."""
    pm = plugin_manager()
    settings = StreamSettings(poll_seconds=POLL_SECONDS, bookmark_seconds=2 * POLL_SECONDS)
    application = Application(build_registry(pm), open_store(tmp_path, durable=False), pm, streams=settings)
    stream = _open(application.channel())
    began = time.monotonic()
    application.close()
    assert time.monotonic() - began < ENDED_WITHIN
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the server stopped, as before: resume elsewhere
