"""Reads, writes and streams each run on a pool of their own threads."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.errors import StartupError
from stigmer_core.metrics import Metrics
from stigmer_core.server import Server
from stigmer_core.server_pools import DATABASE_READ_THREADS, LMDB_READ_THREADS, PoolSizes


@pytest.fixture(params=["plain", "counted"])
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, grpc.Channel]]:
    """The sync server, its handlers as they are and wrapped to count calls (metrics), which
    must leave each on its own pool."""
    with Application.open(tmp_path / "data", durable=False) as app:
        metrics = Metrics(app.store) if request.param == "counted" else None
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=2, rpc_threads=3), metrics=metrics)
        server.start()
        channel = grpc.insecure_channel(server.address)
        try:
            yield server, channel
        finally:
            channel.close()
            server.stop(grace=1)


def _new_threads(call: Callable[[], object]) -> set[str]:
    """Name prefixes of the threads that appeared while ``call`` ran."""
    before = set(threading.enumerate())
    call()
    return {t.name.rsplit("_", 1)[0] for t in set(threading.enumerate()) - before}


def test_each_kind_of_call_runs_on_its_own_pool(served: tuple[Server, grpc.Channel]) -> None:
    _, channel = served
    command = agent_grpc.AgentCommandControllerStub(channel)
    query = agent_grpc.AgentQueryControllerStub(channel)
    agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="pooled"))
    created: list[agent_pb2.Agent] = []
    assert "stigmer-rpc" in _new_threads(lambda: created.append(command.create(agent, timeout=10)))
    got = _new_threads(lambda: query.get(agent_pb2.AgentId(value=created[0].metadata.id), timeout=10))
    assert "stigmer-read" in got and "stigmer-rpc" not in got
    streams: list[grpc.Call] = []

    def open_watch() -> None:  # the call starts when made, so it is made in here
        streams.append(watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=10))
        next(streams[0])  # type: ignore[call-overload]

    opened = _new_threads(open_watch)
    streams[0].cancel()
    assert "stigmer-stream" in opened and "stigmer-read" not in opened


def test_reads_past_the_read_threads_queue_and_are_all_answered(served: tuple[Server, grpc.Channel]) -> None:
    server, channel = served
    command = agent_grpc.AgentCommandControllerStub(channel)
    query = agent_grpc.AgentQueryControllerStub(channel)
    made = command.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="many")), timeout=10)
    calls = [query.get.future(agent_pb2.AgentId(value=made.metadata.id), timeout=30) for _ in range(64)]
    assert {call.result().metadata.id for call in calls} == {made.metadata.id}
    readers = [t for t in threading.enumerate() if t.name.startswith("stigmer-read")]
    assert 0 < len(readers) <= server.pools.sizes.read_threads


def test_read_threads_default_to_the_engines_and_a_setting_wins(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        try:
            assert server.pools.sizes.read_threads == LMDB_READ_THREADS
        finally:
            server.stop(grace=0)
    assert PoolSizes().for_store(object()).read_threads == DATABASE_READ_THREADS  # any other engine
    assert PoolSizes(read_threads=7).for_store(object()).read_threads == 7


def test_pool_sizes_come_from_the_environment_and_bad_values_are_refused() -> None:
    assert PoolSizes.from_env({}) == PoolSizes()
    assert PoolSizes.from_env({"STIGMER_READ_THREADS": "16", "STIGMER_RPC_THREADS": "64"}) == PoolSizes(16, 64)
    with pytest.raises(StartupError, match="STIGMER_READ_THREADS='many' is not a whole number"):
        PoolSizes.from_env({"STIGMER_READ_THREADS": "many"})
    with pytest.raises(StartupError, match="STIGMER_RPC_THREADS must be at least 1"):
        PoolSizes.from_env({"STIGMER_RPC_THREADS": "0"})


def test_on_lmdb_reads_run_on_the_event_loop_and_writes_queue_for_the_group_commit(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(server.address)
        try:
            assert server.pools.reads is None
            command = agent_grpc.AgentCommandControllerStub(channel)
            query = agent_grpc.AgentQueryControllerStub(channel)
            made_in: list[agent_pb2.Agent] = []
            writers = _new_threads(
                lambda: made_in.append(
                    command.create(
                        agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="inline")), timeout=10
                    )
                )
            )
            assert "stigmer-rpc" not in writers  # no thread waits for the commit: a committer leads it
            made = made_in[0]
            query.get(agent_pb2.AgentId(value=made.metadata.id), timeout=10)  # the channel is open
            started = _new_threads(
                lambda: [query.get(agent_pb2.AgentId(value=made.metadata.id), timeout=10) for _ in range(20)]
            )
            assert not {name for name in started if name.startswith("stigmer")}
            missing = agent_pb2.AgentId(value="agt_missing")
            with pytest.raises(grpc.RpcError) as err:  # a status raised inline reaches the caller as on a pool
                query.get(missing, timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            channel.close()
            server.stop(grace=1)


def test_read_threads_may_be_zero_and_nothing_else_below_one() -> None:
    assert PoolSizes.from_env({"STIGMER_READ_THREADS": "0"}) == PoolSizes(read_threads=0)
    with pytest.raises(StartupError, match="STIGMER_READ_THREADS must be at least 0"):
        PoolSizes.from_env({"STIGMER_READ_THREADS": "-1"})


@pytest.mark.parametrize("read_threads", [0, 2], ids=["asyncio-server", "sync-server"])
def test_reflection_answers_as_v1_and_v1alpha(tmp_path: Path, read_threads: int) -> None:
    """Clients that speak only reflection v1 (the stable name) got UNIMPLEMENTED: grpcio-reflection
    serves v1alpha, the same protocol under another package."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=read_threads))
        server.start()
        assert server.asynchronous is (read_threads == 0)
        channel = grpc.insecure_channel(server.address)
        try:
            for version in ("v1", "v1alpha"):
                call = channel.stream_stream(
                    f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
                )
                asked = [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="stigmer.agentic.agent.v1.AgentQueryController"
                    ),
                ]
                listed, found = list(call(iter(asked), timeout=10))
                names = {s.name for s in listed.list_services_response.service}
                assert {"stigmer.agentic.agent.v1.AgentQueryController", "grpc.reflection.v1.ServerReflection"} <= names
                assert found.file_descriptor_response.file_descriptor_proto, version
                # every service listed can be described (v1 too), and a method by its full name
                described = list(
                    call(
                        iter(
                            [
                                *(
                                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=n)
                                    for n in sorted(names)
                                ),
                                reflection_pb2.ServerReflectionRequest(
                                    file_containing_symbol="stigmer.agentic.agent.v1.AgentCommandController.create"
                                ),
                                reflection_pb2.ServerReflectionRequest(
                                    file_containing_symbol="stigmer.agentic.agent.v1.AgentCommandController.nosuch"
                                ),
                            ]
                        ),
                        timeout=10,
                    )
                )
                *services, method, missing = described
                for name, answer in zip(sorted(names), services, strict=True):
                    assert answer.file_descriptor_response.file_descriptor_proto, (version, name)
                v1_file = descriptor_pb2.FileDescriptorProto.FromString(
                    services[
                        sorted(names).index("grpc.reflection.v1.ServerReflection")
                    ].file_descriptor_response.file_descriptor_proto[0]
                )
                assert v1_file.package == "grpc.reflection.v1" and v1_file.service[0].name == "ServerReflection"
                method_file = descriptor_pb2.FileDescriptorProto.FromString(
                    method.file_descriptor_response.file_descriptor_proto[0]
                )
                assert "AgentCommandController" in {s.name for s in method_file.service}
                assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        finally:
            channel.close()
            server.stop(grace=1)


@pytest.mark.parametrize("read_threads", [0, 2], ids=["asyncio", "sync"])
def test_what_grpc_logs_of_a_clients_doing_is_not_an_error(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, read_threads: int
) -> None:
    """grpc's asyncio server logs ERROR when a stream's client vanished while a message was sent,
    and both log ERROR with a traceback for a header value that is not UTF-8, sent before any
    token is read: 28 KB of log a call, which anyone could send."""
    import logging

    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=read_threads))
        try:
            cygrpc = logging.getLogger("grpc._cython.cygrpc")
            with caplog.at_level(logging.INFO):
                cygrpc.error(
                    "ExecuteBatchError raised in core by servicer method [%s]", "/stigmer.commons.watch.v1.Watch/Watch"
                )
                try:
                    b"\xff".decode()
                except UnicodeDecodeError:
                    cygrpc.exception("Invalid encoding on %s", b"\xff" * 7000)
                cygrpc.error("something else broke")
            assert [r.getMessage() for r in caplog.records] == ["something else broke"]
            with caplog.at_level(logging.DEBUG):
                cygrpc.error("ExecuteBatchError raised in core by servicer method [%s]", "/x/y")
            assert caplog.records[-1].levelname == "DEBUG"
        finally:
            server.stop(grace=1)


def test_a_burst_of_calls_past_grpcs_default_queue_is_answered_in_turn(tmp_path: Path) -> None:
    """2,500 gets sent at once on one connection (a client's ``Promise.all`` over ids): grpc's
    default queue (1,000 pending calls) refused a few hundred of them CANCELLED, a status a client
    reads as its own cancel; ``STIGMER_MAX_PENDING_CALLS`` (5,000) queues them all."""
    with Application.open(tmp_path / "data", durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        try:

            async def burst() -> collections.Counter[str]:
                async with grpc.aio.insecure_channel(server.address) as channel:
                    query = agent_grpc.AgentQueryControllerStub(channel)

                    async def one(i: int) -> str:
                        try:
                            await query.get(agent_pb2.AgentId(value=f"agt_missing{i}"), timeout=120)
                        except grpc.aio.AioRpcError as exc:
                            return exc.code().name
                        return "OK"

                    return collections.Counter(await asyncio.gather(*(one(i) for i in range(2500))))

            assert asyncio.run(burst()) == {"NOT_FOUND": 2500}
        finally:
            server.stop(grace=1)


def test_the_pending_calls_bound_is_a_setting() -> None:
    sizes = PoolSizes.from_env({"STIGMER_MAX_PENDING_CALLS": "200"})
    assert ("grpc.server.max_pending_requests", 200) in sizes.options()
    assert ("grpc.server.max_pending_requests_hard_limit", 400) in sizes.options()
    for bad, said in (("0", "at least 1"), ("2000000", "at most 1,000,000"), ("lots", "not a whole number")):
        with pytest.raises(StartupError, match=f"STIGMER_MAX_PENDING_CALLS.*{said}"):
            PoolSizes.from_env({"STIGMER_MAX_PENDING_CALLS": bad})
