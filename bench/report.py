"""The printed table and the JSON document of one run.

Both carry the same numbers; the JSON adds the budget and the versions of
what was measured, so two files can be compared without guessing how they
were made.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import attrs

from bench.budget import Budget
from bench.ratios import Found, added_microseconds, compute
from bench.results import Measurement
from bench.scenarios import RunResult

PACKAGES = ("grpcio", "protobuf", "lmdb", "protovalidate", "stigmer-core")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 0,
        "switch_interval_s": sys.getswitchinterval(),
        **{package: _version(package) for package in PACKAGES},
    }


def _notes(row: Measurement) -> str:
    facts, derived = row.facts, row.derived
    parts = []
    if "requests_per_commit" in derived:
        span = ""
        if "commits_before" in facts and "commits_after" in facts:
            span = f" (store.commits {facts['commits_before']:,.0f}->{facts['commits_after']:,.0f})"
        parts.append(f"{row.counters['commits']:,.0f} commits{span}, {derived['requests_per_commit']:.1f} req/commit")
    if "lock_busy" in derived:
        parts.append(
            f"write lock held {100 * derived['lock_busy']:.0f}% of the run, {derived['lock_wall_per_cpu']:.1f}x its CPU"
        )
    if "switches_per_call" in derived and "system_share" in derived:
        parts.append(
            f"kernel {100 * derived['system_share']:.0f}% of the CPU, "
            f"{derived['switches_per_call']:.1f} context switches/call"
        )
    if "puts_per_s" in derived:
        parts.append(f"{derived['puts_per_s']:,.0f} puts/s")
    if "entries_per_page" in facts:
        parts.append(f"{facts['entries_per_page']:.0f} entries, {facts['page_bytes'] / 1024:.0f} KiB")
    if "disk_bytes" in facts:
        parts.append(f"{facts['stored_agents']:,.0f} agents in {facts['disk_bytes'] / 2**20:,.1f} MiB on disk")
    elif "stored_agents" in facts:
        parts.append(f"{facts['stored_agents']:,.0f} agents stored")
    if "daemon_rss_mib" in facts:
        parts.append(f"daemon RSS {facts['daemon_rss_mib']:,.0f} MiB")
    if "agent_create_us" in facts:
        parts.append(
            f"framework CPU, commit excluded: Agent create {facts['agent_create_us']:.0f} µs"
            f" ({facts['agent_create_less_own_commit_us']:.0f} µs less its own commit calls,"
            f" which took {facts['agent_create_own_commit_us']:.0f} µs), Environment create "
            f"{facts['environment_create_us']:.0f} µs, get {facts['get_us']:.1f} µs"
        )
    if "payload_bytes" in facts:
        parts.append(f"{facts['payload_bytes']:.0f} B each way")
    return "; ".join(parts)


def _number(value: float, times: bool) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}x" if times else f"{value:.2f}"


def _ratio_line(found: Found, width: int) -> str:
    times = found.ratio.denominator is not None
    spread = f"{_number(found.low, times)}-{_number(found.high, times)}" if len(found.rounds) > 1 else ""
    return f"{found.ratio.name:<{width}}  {_number(found.value, times):>8}  {spread:>13}  {found.ratio.meaning}"


def table(result: RunResult, budget: Budget, peak_rss_mib: float) -> str:
    rows = result.measurements
    width = max([len("scenario"), *(len(r.name) for r in rows)])
    before, after = result.load_average
    lines = [f"load average (1 min) {before:.2f} before, {after:.2f} after, on {os.cpu_count()} CPUs"]
    if rows:
        lines += [
            "",
            f"{'scenario':<{width}}  {'calls':>7}  {'secs':>5}  {'calls/s':>9}  {'p50 ms':>7}  {'p99 ms':>7}  "
            f"{'cpu µs':>7}  notes",
            "-" * (width + 66),
        ]
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {r.calls:>7}  {r.seconds:>5.2f}  {r.calls_per_s:>9,.0f}  "
            f"{r.p50_ms:>7.3f}  {r.p99_ms:>7.3f}  {r.cpu_us_per_call:>7,.0f}  {_notes(r)}"
        )
    by_name = {r.name: r for r in rows}
    found = compute(by_name, result.rounds, budget)
    if found:
        rwidth = max(len(f.ratio.name) for f in found)
        lines += [
            "",
            f"ratios: median of {budget.rounds} round(s), lowest-highest round",
            f"{'ratio':<{rwidth}}  {'median':>8}  {'rounds':>13}  meaning",
            "-" * (rwidth + 80),
        ]
        lines += [_ratio_line(f, rwidth) for f in found]
    added = added_microseconds(by_name, budget)
    if added:
        lines += ["", "per call, framework get minus echo (wall: from 1/throughput; cpu: process CPU per call):"]
        lines += [f"  {name}: {us:+.0f} µs" for name, us in added.items()]
    lines += ["", "memory:"]
    if result.memory:
        m = result.memory
        lines.append(
            f"  tracemalloc, {m['creates']:.0f} in-process creates: peak {m['peak_kib']:,.0f} KiB, "
            f"retained {m['retained_kib']:,.0f} KiB ({m['retained_bytes_per_create']:,.0f} B per create)"
        )
    lines.append(f"  peak RSS of this process: {peak_rss_mib:,.1f} MiB")
    for name, why in result.failures.items():
        lines.append(f"\nFAILED {name}: {why}")
    lines.append(f"\n{len(rows)} rows, {budget.rounds} round(s), in {result.seconds:.1f} s")
    return "\n".join(lines)


def _round(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else value


def _ratio_json(found: Found) -> dict[str, Any]:
    ratio = found.ratio
    return {
        "value": _round(found.value),
        "min": _round(found.low),
        "max": _round(found.high),
        "rounds": [_round(v) for v in found.rounds],
        "numerator": ratio.numerator,
        "denominator": ratio.denominator,
        "field": ratio.field,
        "meaning": ratio.meaning,
    }


def document(result: RunResult, budget: Budget, peak_rss_mib: float, *, quick: bool) -> dict[str, Any]:
    by_name: Mapping[str, Measurement] = {r.name: r for r in result.measurements}
    return {
        "quick": quick,
        "ran": result.ran,
        "failures": result.failures,
        "seconds": round(result.seconds, 3),
        "load_average": {"before": result.load_average[0], "after": result.load_average[1]},
        "budget": attrs.asdict(budget),
        "environment": environment(),
        "scenarios": {r.name: r.to_json() for r in result.measurements},
        "ratios": {f.ratio.name: _ratio_json(f) for f in compute(by_name, result.rounds, budget)},
        "added_us_per_call": {name: round(us, 2) for name, us in added_microseconds(by_name, budget).items()},
        "memory": {"peak_rss_mib": round(peak_rss_mib, 2), "traced_creates": result.memory},
    }
