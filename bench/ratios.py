"""The comparisons a run is read by.

A ratio divides two rows of the same run, so machine speed and load cancel
out of it; that makes ratios the numbers to compare across runs and
machines, where absolute rates are not. On a shared machine load also drifts
within a run, so a throughput ratio is taken in every round (its two rows ran
minutes apart at most, seconds apart usually) and reported as the median of
the rounds, with their spread next to it: a spread wider than the effect in
question says the run cannot decide it.

A ratio whose rows did not run (``--only``) is left out rather than shown as
zero; a NaN means a row with no calls, and is kept to be seen.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import attrs

from bench import streams
from bench.budget import Budget
from bench.results import Measurement

Rows = Mapping[str, Measurement]


@attrs.frozen
class Ratio:
    """``field`` of ``numerator`` over the same of ``denominator``, or the numerator's alone when no denominator."""

    numerator: str
    denominator: str | None
    meaning: str
    field: str = "calls_per_s"

    @property
    def name(self) -> str:
        if self.denominator is None:
            return f"{self.numerator} {self.field}"
        suffix = "" if self.field == "calls_per_s" else f" ({self.field})"
        return f"{self.numerator} / {self.denominator}{suffix}"

    def value(self, rows: Rows) -> float | None:
        top = rows.get(self.numerator)
        if top is None:
            return None
        high = top.value(self.field)
        if self.denominator is None or high is None:
            return high
        bottom = rows.get(self.denominator)
        low = None if bottom is None else bottom.value(self.field)
        if low is None:
            return None
        return high / low if low > 0 else math.nan


@attrs.frozen
class Found:
    """A ratio's value: the median over rounds, and the lowest and highest round."""

    ratio: Ratio
    value: float
    low: float
    high: float
    rounds: tuple[float, ...]


def ratios(budget: Budget) -> tuple[Ratio, ...]:
    c = f"c{budget.in_flight}"
    t = f"t{budget.store_threads}"
    n = budget.in_flight
    per_commit = "requests_per_commit"
    return (
        Ratio("get.net.serial", "echo.net.serial", "framework get vs bare grpcio echo, one caller (1.0 = no overhead)"),
        Ratio(f"get.net.{c}", f"echo.net.{c}", f"framework get vs bare grpcio echo, {n} in flight (target >= 0.9)"),
        Ratio(f"get.net.{c}", f"echo.aio.{c}", "the same against grpcio's asyncio echo, the daemon's server model"),
        Ratio(
            f"create.net.{c}",
            f"echo.net.{c}",
            f"framework durable create vs bare grpcio echo, {n} in flight (target >= 0.6)",
        ),
        Ratio(f"create.net.{c}", f"echo.aio.{c}", "the same against grpcio's asyncio echo, the daemon's server model"),
        Ratio(
            f"create.net.{c}",
            f"echo.aio.{c}",
            "context switches per durable create vs per asyncio echo call, client and server together",
            "switches_per_call",
        ),
        Ratio(f"create.net.{c}", None, "context switches per durable create over the network", "switches_per_call"),
        Ratio(f"create.inproc.{c}", None, "context switches per durable create in process", "switches_per_call"),
        Ratio(f"echo.aio.{c}", f"echo.net.{c}", f"grpcio alone: asyncio server vs sync server, {n} in flight"),
        Ratio("get_by_reference.net.serial", "echo.net.serial", "getByReference vs bare grpcio echo, one caller"),
        Ratio(
            "get.inproc.serial",
            "echo.net.serial",
            "framework's CPU per get (in process, no grpc) as a share of a bare grpcio call's",
            "cpu_us_per_call",
        ),
        Ratio("get.inproc.serial", "get.net.serial", "in-process channel vs network, get, one caller"),
        Ratio(f"get.inproc.{c}", f"get.net.{c}", f"in-process channel vs network, get, {n} callers"),
        Ratio(f"create.net.{c}", "create.net.serial", "concurrent vs serial creates over the network (group commit)"),
        Ratio(f"create.inproc.{c}", "create.inproc.serial", "concurrent vs serial creates in process (group commit)"),
        Ratio(f"create.net.{c}", None, "creates per durable commit, network", per_commit),
        Ratio(f"create.inproc.{c}", None, "creates per durable commit, in process", per_commit),
        Ratio("create.inproc.serial", None, "creates per durable commit, one caller (1.0 expected)", per_commit),
        Ratio(
            f"create.net.{c}",
            None,
            "share of the run the write lock was held, network (near 1: it sets the rate)",
            "lock_busy",
        ),
        Ratio(f"create.net.{c}", None, "write lock's wall time over its committers' CPU, network", "lock_wall_per_cpu"),
        Ratio(f"create.inproc.{c}", None, "share of the run the write lock was held, in process", "lock_busy"),
        Ratio(
            f"create.inproc.{c}",
            None,
            "write lock's wall time over its committers' CPU, in process",
            "lock_wall_per_cpu",
        ),
        Ratio("create.inproc.serial", "store.put.t1", "serial create vs raw one-put transaction (pipeline's share)"),
        Ratio(f"store.put.{t}", "store.put.t1", f"raw puts, {budget.store_threads} threads vs 1 (group commit alone)"),
        Ratio(f"store.put.{t}", None, f"raw puts per durable commit, {budget.store_threads} threads", per_commit),
        Ratio(
            "store.event_pruning.nosync",
            "store.event.nosync",
            "raw put + event, log at its revision bound (every commit prunes) vs within it",
        ),
        *_versus_sqlite(c),
        *_writes(c),
        *_streams(),
        *_scale(budget),
        *_metrics(c),
    )


def _metrics(c: str) -> tuple[Ratio, ...]:
    return tuple(
        Ratio(
            f"metrics.{row}.on.{c}",
            f"metrics.{row}.off.{c}",
            f"{row}, {c[1:]} in flight: serving metrics vs not{what}",
            field,
        )
        for row in ("get", "create")
        for field, what in (("calls_per_s", ""), ("cpu_us_per_call", " (CPU per call)"))
    ) + tuple(
        Ratio("metrics.wrapper_cpu", None, f"CPU µs a counted unary call adds, {where}", field)
        for field, where in (("sync_us", "on grpc's sync server"), ("async_us", "on grpc's asyncio server"))
    )


def _versus_sqlite(c: str) -> tuple[Ratio, ...]:
    claims = {
        "get": "get by id (read target >= 10x)",
        "get_by_reference": "getByReference (read target >= 10x)",
        "list": "a list page of 100 (read target >= 10x)",
        "create.nosync.serial": "serial create, no fsync (non-durable write target >= 5x)",
        "create.durable.serial": "serial durable create (durable write target >= 3x)",
        f"create.durable.{c}": "durable creates in flight (group commit vs one writer)",
    }
    found = [
        Ratio(f"vs_sqlite.lmdb.{row}", f"vs_sqlite.sqlite_json.{row}", f"LMDB / SQLite-JSON, {about}")
        for row, about in claims.items()
    ]
    found += [
        Ratio(
            f"vs_sqlite.sqlite_json.{row}",
            f"vs_sqlite.lmdb.{row}",
            f"CPU per call, SQLite-JSON / LMDB, {row} (steadier than rates on a shared machine)",
            "cpu_us_per_call",
        )
        for row in ("get", "list", "create.nosync.serial")
    ]
    found.append(
        Ratio("vs_sqlite.lmdb.get", "vs_sqlite.sqlite_json.get", "LMDB / SQLite-JSON, bytes on disk", "disk_bytes")
    )
    return tuple(found)


def _scale(budget: Budget) -> tuple[Ratio, ...]:
    small, large = budget.scale_sizes[0], budget.scale_sizes[-1]
    queries = ("get", "get_by_reference", "list", "list_label", "list_by_agent")
    found = [
        Ratio(
            f"scale.n{small}.{query}",
            f"scale.n{large}.{query}",
            f"{query}: rate at {small:,} stored agents over rate at {large:,} (slowdown; target <= 1.5)",
        )
        for query in queries
    ]
    found.append(
        Ratio(f"scale.n{large}.list_by_agent", None, f"daemon RSS (MiB) on {large:,} agents", "daemon_rss_mib")
    )
    return tuple(found)


def compute(merged: Rows, rounds: Sequence[Rows], budget: Budget) -> list[Found]:
    """Every ratio whose rows ran: throughput ratios per round, row figures from the merged rows."""
    found = []
    for ratio in ratios(budget):
        if ratio.denominator is None:  # a row's own figure, over all its rounds
            value = ratio.value(merged)
            if value is not None:
                found.append(Found(ratio, value, value, value, (value,)))
            continue
        per_round = tuple(v for v in (ratio.value(rows) for rows in rounds) if v is not None)
        if per_round:
            finite = [v for v in per_round if math.isfinite(v)] or [math.nan]
            median = statistics.median(per_round) if len(finite) == len(per_round) else math.nan
            found.append(Found(ratio, median, min(finite), max(finite), per_round))
    return found


def added_microseconds(rows: Rows, budget: Budget) -> dict[str, float]:
    """What a framework get costs per call beyond the echo server's call, two ways.

    ``wall``: 1/rate of get minus 1/rate of echo; with calls in flight on a
    CPU-bound machine that is CPU per call. ``cpu``: the process's CPU per
    call, get minus echo; steadier when other processes share the machine.
    """
    found: dict[str, float] = {}
    for mode in ("serial", f"c{budget.in_flight}"):
        get, echo = rows.get(f"get.net.{mode}"), rows.get(f"echo.net.{mode}")
        if get and echo and get.calls_per_s > 0 and echo.calls_per_s > 0:
            found[f"get.net.{mode} wall"] = 1e6 / get.calls_per_s - 1e6 / echo.calls_per_s
            found[f"get.net.{mode} cpu"] = get.cpu_us_per_call - echo.cpu_us_per_call
    return found


def _streams() -> tuple[Ratio, ...]:
    w = f"w{streams.WATCHES}"
    return (
        Ratio(
            f"streams.{w}.loop",
            f"streams.{w}.threads",
            f"CPU per create with {streams.WATCHES} watches: streams on the daemon's event loop vs on stream threads",
            "cpu_us_per_call",
        ),
        *(
            Ratio(f"streams.{w}.{mode}", None, f"daemon CPU µs per stream message, streams {where}", "message_cpu_us")
            for mode, where in (("loop", "on the event loop"), ("threads", "on stream threads"))
        ),
    )


def _writes(c: str) -> tuple[Ratio, ...]:
    found = [
        Ratio(f"writes.{row}.{c}", f"writes.{row}.serial", f"{row}: {c[1:]} in flight vs one caller (group commit)")
        for row in ("update", "apply_changed", "create_agent", "create_environment", "delete_cascade")
    ]
    found += [
        Ratio(
            "writes.apply_unchanged.serial",
            "writes.apply_changed.serial",
            "apply that changes nothing vs one that does",
        ),
        Ratio(
            "writes.create_environment.serial", "writes.create_agent.serial", "create without a derived object vs Agent"
        ),
    ]
    found += [
        Ratio("writes.framework_cpu", None, f"framework CPU µs per request, commit excluded: {what}", field)
        for field, what in (
            ("agent_create_us", "Agent create, less a raw one-put transaction (target <= 100)"),
            ("agent_create_less_own_commit_us", "Agent create, less its own commit calls (target <= 100)"),
            ("agent_create_own_commit_us", "Agent create: its own commit calls"),
            ("environment_create_us", "Environment create"),
            ("get_us", "get (target <= 10)"),
            (
                "agent_create_per_raw_txn",
                "Agent create in raw one-put transactions of this run (steadier across machines)",
            ),
        )
    ]
    return tuple(found)
