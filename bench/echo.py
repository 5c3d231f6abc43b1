"""The baseline: grpcio alone, same loopback, same payload size.

Two servers, each what grpc's own examples build with one generic method
handler that hands the request bytes back: the sync ``grpc.server`` on a
thread pool (``echo.net.*``), and the asyncio ``grpc.aio.server`` the daemon
runs on (``echo.aio.*``). The distance between an echo row and a framework
row is what the framework adds per call; against the aio echo it is that
alone, against the sync echo it also counts what the daemon's server model
saves. The payload is as large as a stored Agent, the response of the get
scenarios it is compared with.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from grpc import aio

from bench import drive
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core.async_calls import LoopThread

SERVICE = "bench.Echo"
METHOD = "Echo"
PATH = f"/{SERVICE}/{METHOD}"
WORKERS = 32
"""The size of ``stigmer_core.server.Server``'s pool for writes; its reads run on 4 threads.
With the client in this process the echo's rate was the same on 4 threads as on 32
(4,463/s and 4,204-4,415/s with 32 in flight), so one echo serves as the baseline of both."""


def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


@contextmanager
def echo_server() -> Iterator[str]:
    """A started echo server on an ephemeral loopback port; yields its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bench-echo"))
    handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        raise OSError("the echo server cannot listen on 127.0.0.1")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


@contextmanager
def aio_echo_server() -> Iterator[str]:
    """The same echo on grpc's asyncio server, on an event loop thread of its own."""
    loop = LoopThread(name="bench-echo-loop")

    async def build() -> tuple[aio.Server, int]:
        server = aio.server()
        handler = grpc.unary_unary_rpc_method_handler(_echo_async)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    try:
        server, port = loop.run(build())
        if port == 0:
            raise OSError("the echo server cannot listen on 127.0.0.1")
        try:
            yield f"127.0.0.1:{port}"
        finally:
            loop.run(server.stop(None))
    finally:
        loop.close()


def _measure(prefix: str, address: str, payload: bytes, budget: Budget) -> list[Measurement]:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary(PATH)
        drive.warm(lambda i: echo(payload), budget.warmup)
        serial = drive.serial(f"{prefix}.serial", lambda i: echo(payload), count=budget.calls, seconds=budget.seconds)
        concurrent = drive.futures_window(
            f"{prefix}.c{budget.in_flight}",
            lambda i: echo.future(payload),
            in_flight=budget.in_flight,
            count=budget.concurrent_calls,
            seconds=budget.seconds,
        )
    return [m.with_facts(payload_bytes=len(payload)) for m in (serial, concurrent)]


def run(budget: Budget, payload_size: int) -> list[Measurement]:
    payload = b"x" * payload_size
    with echo_server() as address:
        rows = _measure("echo.net", address, payload, budget)
    with aio_echo_server() as address:
        rows += _measure("echo.aio", address, payload, budget)
    return rows
