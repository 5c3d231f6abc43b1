"""The local daemon's event loop: uvloop's where it is installed (a dependency on this platform),
the standard library's when ``STIGMER_EVENT_LOOP=asyncio`` asks for it, and a clear refusal of a
value that names neither. Either loop serves every call and stream; driven through real daemons
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
import uvloop

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.async_calls import LOOP_ENV, new_event_loop
from stigmer_core.errors import StartupError
from stigmer_core.grpc_servers import AsyncServing
from stigmer_core.kind_client import KindClient
from stigmer_core.server_pools import PoolSizes
from tests.plugin_server_support import serving


def _standard_class() -> type:
    loop = asyncio.new_event_loop()
    try:
        return type(loop)
    finally:
        loop.close()


STANDARD = _standard_class()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, uvloop.Loop), ("uvloop", uvloop.Loop), ("asyncio", STANDARD), (" AsyncIO ", STANDARD), ("", uvloop.Loop)],
)
def test_the_loop_is_uvloops_unless_the_setting_asks_for_the_standard_librarys(
    setting: str | None, expected: type
) -> None:
    loop = new_event_loop({} if setting is None else {LOOP_ENV: setting})
    try:
        assert type(loop) is expected
    finally:
        loop.close()


def test_a_setting_naming_no_loop_is_refused_with_its_name() -> None:
    with pytest.raises(StartupError, match=f"{LOOP_ENV} must be one of uvloop, asyncio, not 'tornado'"):
        new_event_loop({LOOP_ENV: "tornado"})


@pytest.mark.parametrize(("setting", "expected"), [("uvloop", uvloop.Loop), ("asyncio", STANDARD)])
def test_a_daemon_serves_calls_and_watches_on_either_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, expected: type
) -> None:
    monkeypatch.setenv(LOOP_ENV, setting)
    with Application.open(tmp_path / "data", durable=False) as app, serving(app, PoolSizes()) as (server, channel):
        serving_on = server._serving
        assert isinstance(serving_on, AsyncServing)
        assert type(serving_on._loop.loop) is expected
        watch = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=60)
        try:
            assert next(watch).type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
            client = KindClient(channel, app.registry.kind("Agent"))
            made = client.create(agent_pb2.Agent(metadata={"name": f"on {setting}"}))
            assert client.get(made.metadata.id).metadata.slug == f"on-{setting}"
            added = next(e for e in watch if e.type != watch_pb2.WATCH_EVENT_TYPE_BOOKMARK)
            assert (added.type, added.id) == (watch_pb2.WATCH_EVENT_TYPE_ADDED, made.metadata.id)
            with pytest.raises(grpc.RpcError) as missing:
                client.get("agt-01JZ0000000000000000000000")
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            watch.cancel()


def test_a_late_grpc_event_of_a_stopped_servers_closed_loop_is_not_logged_as_an_error() -> None:
    """Seen in CI: a server stopped, its loop closed, and grpc's poller handed it one more event
    from another server's loop; asyncio logged the RuntimeError at ERROR though nothing failed.
    Other errors of asyncio's are logged as they were."""

    def record(message: str, error: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "asyncio", logging.ERROR, __file__, 1, "Exception in callback %s", (message,), (type(error), error, None)
        )

    late = "functools.partial(<bound method PollerCompletionQueue._handle_events of <grpc._cython.cygrpc...>>)"
    asyncio_log = logging.getLogger("asyncio")
    assert not asyncio_log.filter(record(late, RuntimeError("Event loop is closed")))
    assert asyncio_log.filter(record(late, RuntimeError("something else")))
    assert asyncio_log.filter(record("<Handle some_callback()>", RuntimeError("Event loop is closed")))
