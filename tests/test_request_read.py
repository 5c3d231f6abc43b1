"""A call that sends its headers and never its message holds no thread of a team server for long.

On grpc's sync server (a PostgreSQL store) each unary call went to a pool
thread that then waited inside grpc for the request message, before any
token was looked at: a raw HTTP/2 client opening a few dozen calls with no
token and no message held every read and rpc thread, and no member's get or
create was answered again. Now a caller without a valid token is refused from
its metadata before the read, and any caller's message must arrive within
``STIGMER_REQUEST_READ_TIMEOUT`` seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, hookimpl, request_read
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import StartupError
from stigmer_core.plugins import plugin_manager
from stigmer_core.request_read import ENV
from stigmer_core.server import PoolSizes, Server
from tests.auth_support import ALPHA, make_token
from tests.held_streams import HeldStreams

GET = "/stigmer.agentic.agent.v1.AgentQueryController/get"
CREATE = "/stigmer.agentic.agent.v1.AgentCommandController/create"
HEALTH = "/grpc.health.v1.Health/Check"
WAIT = 60.0
"""How long a test waits for an answer it must get; never a measure of speed."""
POOLS = {"read_threads": 2, "rpc_threads": 4}
UNAUTHENTICATED, DEADLINE_EXCEEDED, UNIMPLEMENTED = "16", "4", "12"


@contextlib.contextmanager
def team_server(
    data: Path, store_url: str, read_seconds: float, unread_calls_per_caller: int | None = None
) -> Iterator[tuple[Server, str, Callable[[Callable[[], Any]], Any]]]:
    """A daemon on PostgreSQL requiring tokens, on a loopback port, with small pools; yields it,
    an editor's token, and ``answer(call)``: ``call``'s result, waited for at most ``WAIT``."""
    app = Application.open(data, store=store_url, durable=False, require_auth=True)
    sizes = PoolSizes(
        **POOLS,
        request_read_seconds=read_seconds,
        unread_calls_per_caller=unread_calls_per_caller,
        unread_calls_per_org=unread_calls_per_caller,
    )
    server = Server(app, "127.0.0.1:0", pools=sizes)
    waiter = futures.ThreadPoolExecutor(2)
    try:
        token, _ = make_token(app, ALPHA, "editor")
        server.start()
        assert not server.asynchronous
        yield server, token, lambda call: waiter.submit(call).result(WAIT)
    finally:
        server.stop(grace=1)
        waiter.shutdown(wait=False, cancel_futures=True)
        app.close()


def _member_calls(channel: grpc.Channel, token: str, name: str) -> Callable[[], str]:
    """A create then a get, as a member with ``token`` makes them; returns the id read back."""
    bearer = (("authorization", f"Bearer {token}"),)

    def calls() -> str:
        agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=ALPHA))
        made = agent_grpc.AgentCommandControllerStub(channel).create(agent, metadata=bearer, timeout=WAIT)
        read = agent_grpc.AgentQueryControllerStub(channel).get(
            agent_pb2.AgentId(value=made.metadata.id), metadata=bearer, timeout=WAIT
        )
        return str(read.metadata.id)

    return calls


def _refused_then_served(
    address: str, counts: tuple[tuple[str, int], ...], answer: Callable[[Callable[[], str]], str], token: str
) -> None:
    """Calls of each (path, count) without a token, and 4 creates with a forged one, all sending no
    message: each is refused UNAUTHENTICATED, then a member's create and get are answered."""
    forged = [("authorization", "Bearer stg_" + "x" * 43)]
    holders = [*(HeldStreams(address, path, count) for path, count in counts), HeldStreams(address, CREATE, 4, forged)]
    try:
        for held in holders:
            ended = held.wait_all_ended(WAIT)
            assert len(ended) == len(held.ids)
            assert {code for code, _ in ended.values()} == {UNAUTHENTICATED}
        with grpc.insecure_channel(address) as channel:
            assert answer(_member_calls(channel, token, "still-served"))
    finally:
        for held in holders:
            held.close()


def test_callers_without_a_token_cannot_hold_threads_by_never_sending_a_message(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    # An hour to send a message: only the refusal before the read can free these threads.
    with team_server(tmp_path / "data", stigmer_postgres_store_url, 3600) as (server, token, answer):
        counts = ((GET, 4 * POOLS["read_threads"]), (CREATE, 4 * POOLS["rpc_threads"]))
        _refused_then_served(server.address, counts, lambda calls: answer(calls), token)


def test_a_members_call_whose_message_never_comes_ends_after_the_read_timeout(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    # Bound per caller and per org past the pools (test_call_limit): the read timeout alone frees them here.
    store = stigmer_postgres_store_url
    with team_server(tmp_path / "data", store, 1, unread_calls_per_caller=100) as (server, token, answer):
        bearer = [("authorization", f"Bearer {token}")]
        holders = [
            HeldStreams(server.address, GET, 2 * POOLS["read_threads"], bearer),
            HeldStreams(server.address, CREATE, 2 * POOLS["rpc_threads"], bearer),
        ]
        try:
            with grpc.insecure_channel(server.address) as channel:
                assert answer(_member_calls(channel, token, "answered-after-them"))
            for held in holders:
                ended = held.wait_all_ended(WAIT)
                assert len(ended) == len(held.ids)
                assert {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
                assert all(ENV in message for _, message in ended.values())
        finally:
            for held in holders:
                held.close()


def test_health_checks_left_without_a_message_end_and_checks_are_answered(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    with (
        team_server(tmp_path / "data", stigmer_postgres_store_url, 1) as (server, _, answer),
        HeldStreams(server.address, HEALTH, 8) as held,
        grpc.insecure_channel(server.address) as channel,
    ):
        check = health_pb2_grpc.HealthStub(channel).Check
        reply = answer(lambda: check(health_pb2.HealthCheckRequest(), timeout=WAIT))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        ended = held.wait_all_ended(WAIT)
        assert {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
        assert len(ended) == len(held.ids)


def test_a_call_closed_without_a_message_is_refused_as_grpc_refuses_it(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    with team_server(tmp_path / "data", stigmer_postgres_store_url, 3600) as (server, token, _):
        bearer = [("authorization", f"Bearer {token}")]
        with HeldStreams(server.address, GET, 1, bearer, end_stream=True) as held:
            (code, message), *_ = held.wait_all_ended(WAIT).values()
            assert code == UNIMPLEMENTED
            assert "requires exactly one request message" in message


WATCH = "/stigmer.commons.watch.v1.Watch/Watch"


@contextlib.contextmanager
def local_server(data: Path, read_seconds: float) -> Iterator[tuple[Server, str]]:
    """A daemon on LMDB requiring tokens (grpc's asyncio server), on a loopback port; yields it and
    an editor's token."""
    app = Application.open(data, durable=False, require_auth=True)
    server = Server(app, "127.0.0.1:0", pools=PoolSizes(request_read_seconds=read_seconds))
    try:
        token, _ = make_token(app, ALPHA, "editor")
        server.start()
        assert server.asynchronous
        yield server, token
    finally:
        server.stop(grace=1)
        app.close()


def test_on_the_local_daemons_server_a_caller_without_a_token_is_refused_before_its_message(tmp_path: Path) -> None:
    """grpc's asyncio server awaited the message first: a raw HTTP/2 client without a token held
    thousands of calls open there for good, each keeping a call's memory (the daemon grew by
    hundreds of MiB and kept it)."""
    with local_server(tmp_path / "data", 3600) as (server, token):
        _refused_then_served(server.address, ((GET, 64), (CREATE, 64), (WATCH, 64)), lambda calls: calls(), token)


def test_on_the_local_daemons_server_a_members_message_that_never_comes_ends_the_call(tmp_path: Path) -> None:
    with local_server(tmp_path / "data", 1) as (server, token):
        bearer = [("authorization", f"Bearer {token}")]
        with HeldStreams(server.address, GET, 8, bearer) as gets, HeldStreams(server.address, WATCH, 8, bearer) as watches:
            for held in (gets, watches):
                ended = held.wait_all_ended(WAIT)
                assert len(ended) == len(held.ids)
                assert {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
                assert all(ENV in message for _, message in ended.values())


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "3601", "soon"])
def test_the_read_timeout_setting_is_checked_at_startup(raw: str) -> None:
    with pytest.raises(StartupError, match=ENV):
        PoolSizes.from_env({ENV: raw})
    assert PoolSizes.from_env({ENV: "2.5"}).request_read_seconds == 2.5
    assert PoolSizes.from_env({}).request_read_seconds == PoolSizes().request_read_seconds
    with pytest.raises(StartupError, match=ENV):
        PoolSizes(request_read_seconds=0)


class Seeing(grpc.ServerInterceptor):
    """Passes every call on, noting whether the handler it was given reads a request stream."""

    def __init__(self) -> None:
        self.streaming: list[bool] = []

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is not None and handler_call_details.method == GET:
            self.streaming.append(handler.request_streaming)
        return handler


class SeeingPlugin:
    def __init__(self) -> None:
        self.interceptor = Seeing()

    @hookimpl
    def stigmer_server_interceptors(self) -> list[grpc.ServerInterceptor]:
        return [self.interceptor]


def test_with_a_plugins_interceptors_calls_still_read_under_the_bound(tmp_path: Path) -> None:
    plugin = SeeingPlugin()
    with Application.open(tmp_path / "data", pm=plugin_manager(plugins=[plugin]), durable=False) as app:
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(**POOLS, request_read_seconds=1))
        server.start()
        try:
            assert not server.asynchronous
            with HeldStreams(server.address, GET, 4 * POOLS["read_threads"]) as held:
                with grpc.insecure_channel(server.address) as channel:
                    agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="seen"))
                    made = agent_grpc.AgentCommandControllerStub(channel).create(agent, timeout=WAIT)
                    query = agent_grpc.AgentQueryControllerStub(channel)
                    assert query.get(agent_pb2.AgentId(value=made.metadata.id), timeout=WAIT).metadata.id
                ended = held.wait_all_ended(WAIT)
                assert {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
                assert len(ended) == len(held.ids)
            assert plugin.interceptor.streaming and not any(plugin.interceptor.streaming)
        finally:
            server.stop(grace=1)


def test_calls_ended_without_their_message_are_logged_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line per call: a token's holder (or anyone, where no token is required) sending
    thousands of calls without their messages wrote thousands of lines."""
    request_read._ENDED.clear()  # the process's rate starts anew: earlier tests' calls ended here too
    with (
        local_server(tmp_path / "data", 0.5) as (server, token),
        caplog.at_level("WARNING", "stigmer_core"),
        HeldStreams(server.address, GET, 20, [("authorization", f"Bearer {token}")]) as held,
    ):
        ended = held.wait_all_ended(WAIT)
        assert len(ended) == 20 and {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ended:")]
    assert len(lines) == 1 and GET in lines[0], lines
