"""The baseline: grpcio alone, same loopback, same thread pool, same payload size.

The server is what grpc's own examples build (a sync ``grpc.server`` with a
thread pool and one generic method handler), and it does no work beyond
handing the request bytes back, so the distance between this row and a
framework row is what the framework adds per call. The payload is as large
as a stored Agent, the response of the get scenarios it is compared with.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from bench import drive
from bench.budget import Budget
from bench.results import Measurement

SERVICE = "bench.Echo"
METHOD = "Echo"
PATH = f"/{SERVICE}/{METHOD}"
WORKERS = 32
"""The size of ``stigmer_core.server.Server``'s pool for writes; its reads run on 4 threads.
With the client in this process the echo's rate was the same on 4 threads as on 32
(4,463/s and 4,204-4,415/s with 32 in flight), so one echo serves as the baseline of both."""


def _echo(request: bytes, context: Any) -> bytes:
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


def run(budget: Budget, payload_size: int) -> list[Measurement]:
    payload = b"x" * payload_size
    with echo_server() as address, grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary(PATH)
        drive.warm(lambda i: echo(payload), budget.warmup)
        serial = drive.serial("echo.net.serial", lambda i: echo(payload), count=budget.calls, seconds=budget.seconds)
        concurrent = drive.futures_window(
            f"echo.net.c{budget.in_flight}",
            lambda i: echo.future(payload),
            in_flight=budget.in_flight,
            count=budget.concurrent_calls,
            seconds=budget.seconds,
        )
    return [m.with_facts(payload_bytes=payload_size) for m in (serial, concurrent)]
