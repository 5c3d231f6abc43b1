"""What a stream message costs the daemon: serial creates with watches open, against none.

The daemon is this process (an Application on a store that does not sync, served on
127.0.0.1), and so is the caller making serial Agent creates; the watches are held by a child
process (``bench.stream_watchers``), half of Agent and half of AgentInstance, so each create
(an agent and its default instance) sends every watch one event. This process's CPU per
create with the watches open, less with none, over the watches, is what one message costs
the daemon. A local daemon serves the framework's streams on its event loop; the same watches
pulled on stream threads (how a plugin's own stream is served, and how the framework's were)
are measured in the same run, for the ratio.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import grpc

from bench import drive
from bench.agents import sample_agent
from bench.budget import Budget
from bench.engines import AGENT_COMMANDS
from bench.results import Measurement
from stigmer_core import grpc_servers
from stigmer_core.application import Application
from stigmer_core.server import Server

WATCHES = 60
MODES = ("loop", "threads")
"""Where the framework's streams run: on the daemon's event loop (its own), or pulled on stream threads."""


@contextlib.contextmanager
def _served(data: Path, mode: str) -> Iterator[tuple[Application, str]]:
    on_threads = mock.patch.object(grpc_servers, "inline_streams", lambda registry: frozenset())
    with on_threads if mode == "threads" else contextlib.nullcontext(), Application.open(data, durable=False) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        try:
            yield app, server.address
        finally:
            server.stop(1.0)


@contextlib.contextmanager
def _watching(address: str, count: int) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.stream_watchers", address, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "open":
            raise drive.CallFailed("streams: the watchers did not open")
        yield child
    finally:
        child.kill()
        child.wait(30)


def _creates(name: str, address: str, budget: Budget) -> Measurement:
    with grpc.insecure_channel(address) as channel:
        commands = AGENT_COMMANDS(channel)
        drive.warm(lambda i: commands.create(sample_agent(f"{name} warm {i}", "t0")), budget.warmup // 4)
        count = max(budget.creates // 10, 20)
        return drive.serial(
            name, lambda i: commands.create(sample_agent(f"{name} {i}", "t0")), count=count, seconds=budget.seconds
        )


def run(budget: Budget) -> list[Measurement]:
    found: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-streams-") as tmp:
        for mode in MODES:
            with _served(Path(tmp) / mode, mode) as (_, address):
                alone = _creates(f"streams.w0.{mode}", address, budget)
                with _watching(address, WATCHES) as child:
                    watched = _creates(f"streams.w{WATCHES}.{mode}", address, budget)
                    sent = (watched.calls + budget.warmup // 4) * WATCHES  # each create: an event to every watch
                    assert child.stdin is not None and child.stdout is not None
                    child.stdin.write(f"{sent}\n")
                    child.stdin.flush()
                    received = int(child.stdout.readline())
                if received < sent:  # fewer is a lost event
                    raise drive.CallFailed(f"streams.{mode}: {received} events received of {sent} sent")
                per_message = (watched.cpu_us_per_call - alone.cpu_us_per_call) / WATCHES
                found += [alone, watched.with_facts(watches=WATCHES, message_cpu_us=per_message)]
    return found
