"""Memory: the process's peak RSS, and what a run of creates allocates.

Peak RSS covers the whole run (grpc's threads and buffers, and the pages of
LMDB's memory map that were touched, which count as resident), so it only
bounds the footprint. The traced run is narrower: a fresh in-process
Application, tracing started after one untimed create, so the peak is the
create path's working set and what is still held at the end is what the
path keeps (a cache that grows with every request shows up there).

tracemalloc sees Python's allocator only. upb keeps message contents in its
own arenas (a kept Agent shows as ~110 traced bytes, not its ~700), so a
leak of protobuf messages shows here as their Python wrappers, smaller than
it is but not zero.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from bench.agents import sample_agent
from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def traced_creates(count: int, seconds: float) -> dict[str, float]:
    """Serial in-process creates under tracemalloc (at most ``seconds``); sizes in KiB."""
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data, Application.open(data) as app:
        stub: Any = service_pb2_grpc.AgentCommandControllerStub
        command = stub(app.channel())
        requests = [sample_agent(f"traced agent {i}", "traced") for i in range(count + 1)]
        command.create(requests[0])
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            deadline = time.perf_counter() + seconds
            done = 0
            for request in requests[1:]:
                command.create(request)
                done += 1
                if time.perf_counter() >= deadline:
                    break
            end, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return {
        "creates": float(done),
        "peak_kib": (peak - start) / 1024,
        "retained_kib": (end - start) / 1024,
        "retained_bytes_per_create": (end - start) / done if done else 0.0,
    }
