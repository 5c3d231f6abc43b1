"""A daemon's server on 127.0.0.1 with extra plugins, for tests of what a plugin's steps may do."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, hookimpl
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import PoolSizes, Server
from stigmer_core.store.lmdb_store import LmdbStore


@contextlib.contextmanager
def serving(app: Application, pools: PoolSizes) -> Iterator[tuple[Server, grpc.Channel]]:
    """``app`` served on an ephemeral loopback port, and a channel to it; both closed after."""
    server = Server(app, "127.0.0.1:0", pools=pools)
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, channel
    finally:
        channel.close()
        server.stop(grace=1)


def health_becomes(health: health_pb2_grpc.HealthStub, status: int) -> bool:
    """Whether the server's overall health reaches ``status`` within 15 s (the asyncio server sets
    it on its loop, a store's reachability watch on its own schedule)."""
    for _ in range(150):
        if health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == status:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def served_with(tmp_path: Path, plugin: Any, read_threads: int) -> Iterator[grpc.Channel]:
    """A channel to a server of an LMDB store with ``plugin`` installed (``read_threads`` 0: grpc's
    asyncio server, as a local daemon runs; more: the sync server, as interceptors bring)."""
    pm = plugin_manager(plugins=[plugin])
    app = Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm)
    try:
        with serving(app, PoolSizes(read_threads=read_threads)) as (_, channel):
            yield channel
    finally:
        app.close()


def named_agent(name: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    return agent


Continuation = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler]


class Gate(grpc.ServerInterceptor):
    """Counts the calls it sees and refuses those carrying ``x-gate: closed``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        self.seen.append(handler_call_details.method)
        if ("x-gate", "closed") in tuple(handler_call_details.invocation_metadata or ()):

            def refuse(request: object, context: grpc.ServicerContext) -> None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "the gate is closed")

            return grpc.unary_unary_rpc_method_handler(refuse)
        return continuation(handler_call_details)


class GatePlugin:
    def __init__(self) -> None:
        self.gate = Gate()

    @hookimpl
    def stigmer_server_interceptors(self) -> list[grpc.ServerInterceptor]:
        return [self.gate]
