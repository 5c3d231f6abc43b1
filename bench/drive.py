"""Load drivers: one caller, a window of futures, or a pool of threads.

Every loop stops at a call count or a deadline, whichever comes first, so a
slow or busy machine makes a run shorter in calls, never longer in time. A
failed call fails the measurement: a rate that includes errors measures the
error path, not the one the row is named after.

Why two concurrent drivers: over the network, ``.future()`` keeps N calls in
flight from one client thread, so the client's own CPU stays small and the
server is what is measured. The in-process channel runs a call inside
``future()`` before returning, so there N calls in flight need N threads.
"""

from __future__ import annotations

import itertools
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.results import Measurement

Call = Callable[[int], object]
"""Makes call number ``i`` and returns when it has finished."""

Start = Callable[[int], Any]
"""Starts call number ``i`` and returns its ``grpc.Future`` at once."""

DRAIN_SECONDS = 30.0
"""Longest wait for calls still in flight after the last one was started."""


class CallFailed(RuntimeError):
    """A call under measurement raised; the measurement is void."""


def _kernel_usage() -> tuple[float, int]:
    """The whole process's CPU in the kernel and its context switches so far (every thread's).

    Over the network most of a call's cost past the framework's own work is threads handing
    work and the GIL to each other: each hand-off a context switch, paid as kernel CPU. The
    process CPU a row prints hides that split; these counters show it.
    """
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_stime, used.ru_nvcsw + used.ru_nivcsw


def _with_kernel(measured: Measurement, before: tuple[float, int]) -> Measurement:
    system, switches = _kernel_usage()
    return measured.with_counters(system_cpu_seconds=system - before[0], context_switches=switches - before[1])


def warm(call: Call, count: int) -> None:
    """Connections, caches and lazily built code paths, before the clock starts."""
    for i in range(count):
        call(i)


def serial(name: str, call: Call, *, count: int, seconds: float) -> Measurement:
    latencies: list[float] = []
    clock = time.perf_counter
    kernel = _kernel_usage()
    cpu = time.process_time()
    begin = clock()
    deadline = begin + seconds
    for i in range(count):
        started = clock()
        try:
            call(i)
        except Exception as exc:
            raise CallFailed(f"{name}: call {i} failed: {exc!r}") from exc
        ended = clock()
        latencies.append(ended - started)
        if ended >= deadline:
            break
    return _with_kernel(Measurement.of(name, latencies, clock() - begin, time.process_time() - cpu), kernel)


def futures_window(name: str, start: Start, *, in_flight: int, count: int, seconds: float) -> Measurement:
    """Keep ``in_flight`` calls outstanding; a finished call frees a slot for the next."""
    slots = threading.Semaphore(in_flight)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[BaseException] = []
    clock = time.perf_counter

    def launch(i: int) -> None:
        started = clock()

        def done(future: Any) -> None:
            ended = clock()
            error = future.exception()
            with lock:
                latencies.append(ended - started)
                if error is not None:
                    failures.append(error)
            slots.release()

        start(i).add_done_callback(done)

    kernel = _kernel_usage()
    cpu = time.process_time()
    begin = clock()
    deadline = begin + seconds
    for i in range(count):
        if failures or not slots.acquire(timeout=max(0.0, deadline - clock())):
            break
        if clock() >= deadline:
            slots.release()
            break
        try:
            launch(i)
        except Exception:
            slots.release()
            raise
    drain_until = clock() + DRAIN_SECONDS
    for _ in range(in_flight):
        if not slots.acquire(timeout=max(0.0, drain_until - clock())):
            raise CallFailed(f"{name}: calls still in flight after {DRAIN_SECONDS:.0f} s")
    elapsed, cpu = clock() - begin, time.process_time() - cpu
    if failures:
        raise CallFailed(f"{name}: {len(failures)} call(s) failed, first: {failures[0]!r}") from failures[0]
    return _with_kernel(Measurement.of(name, latencies, elapsed, cpu, in_flight=in_flight), kernel)


def threads(name: str, call: Call, *, workers: int, count: int, seconds: float) -> Measurement:
    """``workers`` threads, each a serial caller, sharing one count and one deadline."""
    numbers = itertools.count()  # next() on it is atomic under the GIL
    clock = time.perf_counter
    per_thread: list[list[float]] = [[] for _ in range(workers)]
    failures: list[BaseException] = []
    ready = threading.Barrier(workers + 1)
    bounds: list[float] = []

    def work(latencies: list[float]) -> None:
        ready.wait()
        deadline = bounds[0]
        while not failures:
            i = next(numbers)
            if i >= count:
                return
            started = clock()
            if started >= deadline:
                return
            try:
                call(i)
            except Exception as exc:
                failures.append(exc)
                return
            latencies.append(clock() - started)

    pool = [
        threading.Thread(target=work, args=(latencies,), name=f"bench-{i}", daemon=True)
        for i, latencies in enumerate(per_thread)
    ]
    for thread in pool:
        thread.start()
    kernel = _kernel_usage()
    cpu = time.process_time()
    begin = clock()
    bounds.append(begin + seconds)
    ready.wait()
    join_until = begin + seconds + DRAIN_SECONDS
    for thread in pool:
        thread.join(timeout=max(0.0, join_until - clock()))
        if thread.is_alive():
            raise CallFailed(f"{name}: a worker thread is still busy after {DRAIN_SECONDS:.0f} s")
    elapsed, cpu = clock() - begin, time.process_time() - cpu
    if failures:
        raise CallFailed(f"{name}: {len(failures)} call(s) failed, first: {failures[0]!r}") from failures[0]
    samples = [s for latencies in per_thread for s in latencies]
    return _with_kernel(Measurement.of(name, samples, elapsed, cpu, in_flight=workers), kernel)
