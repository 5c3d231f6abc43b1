"""What serving Prometheus metrics costs a call (``stigmer serve --metrics-address``).

Two servers on one application, one counting its calls and one not, take turns
(``ROUNDS`` times each) at gets and durable creates with calls in flight over
the network, so the ratio of their rates has the machine's drift on both sides.
A daemon without metrics runs the very handlers the second server does, so the
ratio is what turning them on costs. That cost (a few µs) is far below what a
network call costs the process, so the rates' ratio mostly shows the machine's
noise: ``metrics.wrapper_cpu`` times the wrappers themselves around a handler
that does nothing, on both grpc servers' shapes, which is the figure to read.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench import drive
from bench.agents import COMMAND_STUB, QUERY_STUB, sample_agent, seed
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.metrics import Metrics, counted_behaviors
from stigmer_core.server import Server

ROUNDS = 3
SEEDED = 200
WRAPPED_CALLS = 100_000


class _Context:
    """What the wrappers ask a call's context, answered at once: the wrappers' own cost is timed."""

    def code(self) -> None:
        return None

    def cancelled(self) -> bool:
        return False

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float:
        return 30.0


def _wrapper_cpu(metrics: Metrics) -> Measurement:
    """CPU µs a counted unary call adds on grpc's sync server and on its asyncio one."""
    sync, asynchronous = counted_behaviors(metrics, "/bench.Metrics/Probe")
    context = _Context()

    def plain(request: int, context: _Context) -> int:
        return request

    async def plain_async(request: int, context: _Context) -> int:
        return request

    def timed_sync(behavior: Callable[[int, _Context], int]) -> float:
        begin = time.thread_time()
        for i in range(WRAPPED_CALLS):
            behavior(i, context)
        return (time.thread_time() - begin) / WRAPPED_CALLS * 1e6

    async def timed_async(behavior: Callable[[int, _Context], Any]) -> float:
        begin = time.thread_time()
        for i in range(WRAPPED_CALLS):
            await behavior(i, context)
        return (time.thread_time() - begin) / WRAPPED_CALLS * 1e6

    facts = {
        "sync_us": timed_sync(sync(plain)) - timed_sync(plain),
        "async_us": asyncio.run(timed_async(asynchronous(plain_async))) - asyncio.run(timed_async(plain_async)),
    }
    return Measurement.of("metrics.wrapper_cpu", [0.0], 1.0, 0.0).with_facts(**facts)


def run(budget: Budget) -> list[Measurement]:
    c = budget.in_flight
    rows: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data, Application.open(data) as app:
        ids, _ = seed(app, SEEDED)
        metrics = Metrics(app.store)
        servers = {"off": Server(app, "127.0.0.1:0"), "on": Server(app, "127.0.0.1:0", metrics=metrics)}
        channels: dict[str, grpc.Channel] = {}
        try:
            for label, server in servers.items():
                server.start()
                channels[label] = grpc.insecure_channel(server.address)
                grpc.channel_ready_future(channels[label]).result(timeout=10)
            names = iter(range(10**9))
            for _ in range(ROUNDS):
                for label, channel in channels.items():
                    query, command = QUERY_STUB(channel), COMMAND_STUB(channel)
                    gets: Callable[[int], Any] = lambda i, q=query: q.get.future(  # noqa: E731
                        agent_pb2.AgentId(value=ids[i % len(ids)])
                    )
                    creates: Callable[[int], Any] = lambda i, m=command: m.create.future(  # noqa: E731
                        sample_agent(f"metrics {next(names)}", "t0")
                    )
                    drive.warm(lambda i, g=gets: g(i).result(), 200)
                    for name, start, count in (
                        (f"metrics.get.{label}.c{c}", gets, budget.concurrent_calls // ROUNDS),
                        (f"metrics.create.{label}.c{c}", creates, budget.concurrent_creates // ROUNDS),
                    ):
                        measured = drive.futures_window(
                            name, start, in_flight=c, count=max(count, c), seconds=budget.seconds / ROUNDS
                        )
                        rows.setdefault(name, []).append(measured)
        finally:
            for channel in channels.values():
                channel.close()
            for server in servers.values():
                server.stop(1.0)
        wrapper = _wrapper_cpu(metrics)
    return [*(Measurement.merge(found) for found in rows.values()), wrapper]
