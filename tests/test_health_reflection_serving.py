"""Health and reflection answer without a token: they keep to threads and bounds of their own.

On grpc's sync server (PostgreSQL, or LMDB with read threads or a plugin's
interceptors) reflection streams ran on the rpc pool, each waiting on its
thread for the client's next request: a client holding a few dozen open, and
sending nothing, left every write and health check waiting. Health and
reflection also answered INTERNAL (UNKNOWN on the asyncio server) to request
bytes that do not parse, where every other rpc says INVALID_ARGUMENT.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import StartupError
from stigmer_core.hookspecs import hookimpl
from stigmer_core.kinds.declaration import KindDeclaration
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import step
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store.lmdb_store import LmdbStore
from tests import engine_support
from tests.engine_support import OpenStore
from tests.plugin_server_support import serving

engine = engine_support.engine

DEADLINE = 30.0
REFLECTION = {
    version: f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo" for version in ("v1alpha", "v1")
}
FLAVOURS = {"asyncio-server": 0, "sync-server": 2}
"""Read threads: 0 serves LMDB on grpc's asyncio server, more on its sync server."""


@contextlib.contextmanager
def _served(app: Application, pools: PoolSizes, *, asynchronous: bool) -> Iterator[grpc.Channel]:
    with serving(app, pools) as (server, channel):
        assert server.asynchronous is asynchronous
        yield channel


class HeldStream:
    """A reflection stream that asked one question, got its answer, and now sends nothing,
    its request stream left open: on the server it waits for the next request."""

    def __init__(self, channel: grpc.Channel, version: str = "v1alpha") -> None:
        self._more: queue.Queue[None] = queue.Queue()
        call = channel.stream_stream(
            REFLECTION[version],
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self.call = call(self._requests(), timeout=DEADLINE * 4)  # outlives every wait below
        self._first: futures.Future[reflection_pb2.ServerReflectionResponse] = futures.Future()
        threading.Thread(target=self._answer, daemon=True).start()

    def _requests(self) -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        self._more.get()

    def _answer(self) -> None:
        try:
            self._first.set_result(next(self.call))  # type: ignore[call-overload]
        except grpc.RpcError as exc:
            self._first.set_exception(exc)

    def answered(self) -> bool:
        """Whether its one question was answered; raises the refusal, or TimeoutError when no
        answer came within the deadline (the stream still open: it waits for a thread)."""
        return self._first.result(timeout=DEADLINE).HasField("list_services_response")

    def close(self) -> None:
        self._more.put(None)
        self.call.cancel()  # type: ignore[attr-defined]


def _write_and_check(channel: grpc.Channel, name: str) -> None:
    made = agent_grpc.AgentCommandControllerStub(channel).create(
        agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name)), timeout=DEADLINE
    )
    assert made.metadata.id
    checked = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_streams_held_open_leave_the_rpc_threads_to_writes_and_health(engine: OpenStore) -> None:
    """The sync server (a database's, and LMDB's with read threads): more idle reflection streams
    than the rpc pool has threads, and a write and a health check are still answered."""
    pm = plugin_manager()
    with Application(build_registry(pm), engine(), pm) as app:
        pools = PoolSizes(read_threads=2, rpc_threads=2, reflection_streams=8)
        with _served(app, pools, asynchronous=False) as channel:
            held = [HeldStream(channel, version) for version in ("v1alpha", "v1") * 3]
            try:
                assert all(stream.answered() for stream in held)  # each open on the server, and waiting
                _write_and_check(channel, "while-reflection-waits")
            finally:
                for stream in held:
                    stream.close()


def test_reflection_streams_held_open_on_the_asyncio_server_leave_writes_and_health(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        pools = PoolSizes(read_threads=0, rpc_threads=2, reflection_streams=8)
        with _served(app, pools, asynchronous=True) as channel:
            held = [HeldStream(channel) for _ in range(6)]
            try:
                assert all(stream.answered() for stream in held)
                _write_and_check(channel, "while-reflection-waits")
            finally:
                for stream in held:
                    stream.close()


class HeldWrite:
    """A PREPARE step of agents' create that holds its rpc thread until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

        @step(Phase.PREPARE, name="holds")
        def holds(ctx: Any) -> None:
            self.entered.set()
            assert self.release.wait(DEADLINE)

        self.step = holds

    @hookimpl
    def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
        return [self.step] if kind.name == "Agent" and operation == "create" else []


def test_health_answers_while_writes_hold_every_rpc_thread(tmp_path: Path) -> None:
    held = HeldWrite()
    pm = plugin_manager(plugins=[held])
    with Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app:
        pools = PoolSizes(read_threads=2, rpc_threads=1)  # the sync server, one rpc thread
        with _served(app, pools, asynchronous=False) as channel:
            commands = agent_grpc.AgentCommandControllerStub(channel)
            writing = commands.create.future(
                agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="holds")), timeout=DEADLINE
            )
            try:
                assert held.entered.wait(DEADLINE)  # the one rpc thread is taken
                queued = commands.create.future(
                    agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="queued")), timeout=DEADLINE
                )
                health = health_pb2_grpc.HealthStub(channel)
                checked = health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
                assert checked.status == health_pb2.HealthCheckResponse.SERVING
                watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
                assert not writing.done() and not queued.done()
            finally:
                held.release.set()
            assert writing.result(timeout=DEADLINE).metadata.name == "holds"
            assert queued.result(timeout=DEADLINE).metadata.name == "queued"


@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_a_reflection_stream_past_the_bound_is_refused_until_one_closes(tmp_path: Path, read_threads: int) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        pools = PoolSizes(read_threads=read_threads, reflection_streams=2)
        with _served(app, pools, asynchronous=read_threads == 0) as channel:
            held = [HeldStream(channel, "v1alpha"), HeldStream(channel, "v1")]  # both names count together
            try:
                assert all(stream.answered() for stream in held)
                for version in ("v1alpha", "v1"):
                    refused = HeldStream(channel, version)
                    with pytest.raises(grpc.RpcError) as err:
                        refused.answered()
                    refused.close()
                    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "STIGMER_MAX_REFLECTION_STREAMS" in (err.value.details() or "")
                _write_and_check(channel, "past-the-bound")
                held.pop().close()
                assert _opens_within(channel, DEADLINE)  # its slot is given back as its call ends
            finally:
                for stream in held:
                    stream.close()


def _opens_within(channel: grpc.Channel, seconds: float) -> bool:
    give_up = time.monotonic() + seconds
    while True:
        stream = HeldStream(channel)
        try:
            return stream.answered()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > give_up:
                raise
        finally:
            stream.close()
        time.sleep(0.05)


def test_the_reflection_bound_comes_from_the_environment() -> None:
    assert PoolSizes().reflection_streams == 64
    assert PoolSizes.from_env({"STIGMER_MAX_REFLECTION_STREAMS": "3"}).reflection_streams == 3
    with pytest.raises(StartupError, match="STIGMER_MAX_REFLECTION_STREAMS must be at least 1"):
        PoolSizes.from_env({"STIGMER_MAX_REFLECTION_STREAMS": "0"})


GARBAGE = [b"\xff\xff\xff", b"\x0a\x02\xc3\x28"]  # not protobuf; invalid UTF-8 in field 1 (a string in both)


def _refused(call: grpc.RpcError, name: str, garbage: bytes) -> None:
    """Bytes that are no message at all are told so; a string field that is not UTF-8 is named."""
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT, call.details()
    said = f"request is not a valid {name}" if garbage == GARBAGE[0] else "is not valid UTF-8"
    assert said in (call.details() or ""), call.details()


@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_request_bytes_that_do_not_parse_are_invalid_argument_for_health_and_reflection(
    tmp_path: Path, read_threads: int, caplog: pytest.LogCaptureFixture
) -> None:
    raw = {"request_serializer": None, "response_deserializer": None}
    with Application.open(tmp_path / "data", durable=False) as app:
        pools = PoolSizes(read_threads=read_threads, reflection_streams=1)
        with _served(app, pools, asynchronous=read_threads == 0) as channel, caplog.at_level(logging.WARNING):
            for garbage in GARBAGE:
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary("/grpc.health.v1.Health/Check", **raw)(garbage, timeout=DEADLINE)
                _refused(err.value, "grpc.health.v1.HealthCheckRequest", garbage)
                with pytest.raises(grpc.RpcError) as err:
                    next(channel.unary_stream("/grpc.health.v1.Health/Watch", **raw)(garbage, timeout=DEADLINE))
                _refused(err.value, "grpc.health.v1.HealthCheckRequest", garbage)
                for version, path in REFLECTION.items():
                    with pytest.raises(grpc.RpcError) as err:
                        list(channel.stream_stream(path, **raw)(iter([garbage]), timeout=DEADLINE))
                    _refused(err.value, f"grpc.reflection.{version}.ServerReflectionRequest", garbage)
            # a bad request ends only its own call, and gives its slot back (there is one): the next is answered
            for path in REFLECTION.values():
                good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
                answers = list(channel.stream_stream(path, **raw)(iter([good]), timeout=DEADLINE))
                assert reflection_pb2.ServerReflectionResponse.FromString(answers[0]).list_services_response
            checked = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
                r.getMessage() for r in caplog.records
            ]


class Following:
    """A watch read on a thread of its own from its first status on, as a load balancer reads one:
    grpc's Python client drops a message still unread when the call's status has come in (its
    iterator raises first), so one read only after the server stopped may miss its last status."""

    def __init__(self, watch: Any) -> None:
        self.seen: list[int] = []
        self.ended: grpc.RpcError | None = None
        self._watch = watch
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._until_reading()

    def _until_reading(self) -> None:
        """Until the thread's read is under way: grpc's client drops a message whose call's status
        came in before the read began (``_next`` raises at once then), and a busy machine started the
        thread after the server had stopped (seen once in CI: no NOT_SERVING). grpc's iterator keeps
        its outstanding reads in ``_state.due``."""
        from grpc._cython import cygrpc

        state = getattr(self._watch, "_state", None)
        waited_until = time.monotonic() + DEADLINE
        while time.monotonic() < waited_until and self._thread.is_alive():
            if state is None:
                time.sleep(0.5)  # another grpc: a moment for the thread to reach its read
                return
            with state.condition:
                if cygrpc.OperationType.receive_message in state.due:
                    return
            time.sleep(0.005)

    def _read(self) -> None:
        try:
            for message in self._watch:
                self.seen.append(message.status)
        except grpc.RpcError as exc:
            self.ended = exc

    def done(self) -> tuple[list[int], grpc.RpcError | None]:
        self._thread.join(DEADLINE)
        return self.seen, self.ended


@pytest.mark.timeout(120)  # a stop waiting out its grace for the open watch would take 600 s: a failure
@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_health_watches_are_bounded_and_end_when_their_server_stops(tmp_path: Path, read_threads: int) -> None:
    """Health answers without a token: 3,000 anonymous watches were all accepted (65 MB of a
    daemon), and each open watch held a stop for its whole grace, after telling NOT_SERVING."""
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=read_threads, health_watches=2))
        server.start()
        channel = grpc.insecure_channel(server.address)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE * 4) for _ in range(2)]
            assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 2
            with pytest.raises(grpc.RpcError) as refused:
                next(stub.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "STIGMER_MAX_HEALTH_WATCHES" in (refused.value.details() or "")
            watches.pop().cancel()  # its slot comes back once the server sees it gone
            for _ in range(100):
                try:
                    again = stub.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE * 4)
                    assert next(again).status == health_pb2.HealthCheckResponse.SERVING
                    break
                except grpc.RpcError:
                    time.sleep(0.05)
            else:
                pytest.fail("a cancelled watch's slot never came back")
            following = [Following(watches[0]), Following(again)]
            server.stop(grace=600)
            for follower in following:
                seen, ended = follower.done()
                assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING]  # then it ends
                assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            channel.close()
            server.stop(grace=0)


@pytest.mark.timeout(120)  # a check or a stop waiting on the stalled watch would wait its deadline or grace: a failure
@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_a_watch_whose_client_reads_nothing_stalls_no_check_and_no_stop(tmp_path: Path, read_threads: int) -> None:
    """The library's servicer sent each watcher its status holding the lock every check takes, and
    a send waits for the client's flow control: one unauthenticated watch from a client giving a
    window of 0 made every health check of the daemon time out, and held its stop past its limit."""
    from tests.held_streams import HeldStreams

    empty = health_pb2.HealthCheckRequest().SerializeToString()
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=read_threads))
        server.start()
        channel = grpc.insecure_channel(server.address)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            with HeldStreams(server.address, "/grpc.health.v1.Health/Watch", 3, message=empty, window=0):
                time.sleep(0.2)  # its first status is waiting for a window that never opens
                for _ in range(3):
                    checked = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    assert checked.status == health_pb2.HealthCheckResponse.SERVING
                watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE * 4)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                follower = Following(watch)
                server.stop(grace=600)  # the stalled ones cancelled after 1 s: it returns, not after 600
                seen, ended = follower.done()
                how = None if ended is None else (ended.code(), ended.details())  # how it ended, when it fails
                assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING], how
                assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            channel.close()
            server.stop(grace=0)
