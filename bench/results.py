"""Measurements, and the summary figures a run is judged by.

Throughput alone hides queueing, so each measurement also keeps every call's
own latency for the p50 and p99: a change that buys throughput with tail
latency shows up in the same row. A scenario runs in several rounds; the
rounds of one row are merged into one measurement over all their calls.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import attrs

LAST_ROUND_WINS = frozenset({"commits_after"})
"""Facts that describe the end of a row's last round, not its first."""


def percentile(sorted_seconds: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples (0.0 when there are none)."""
    if not sorted_seconds:
        return 0.0
    rank = min(len(sorted_seconds) - 1, max(0, math.ceil(q * len(sorted_seconds)) - 1))
    return sorted_seconds[rank]


@attrs.frozen
class Measurement:
    """One scenario's calls: how many, over how long, at what CPU cost, and their latencies."""

    name: str
    calls: int
    seconds: float
    cpu_seconds: float
    """CPU time of the whole process (client, server, grpc's threads) over ``seconds``."""
    latencies: array[float] = attrs.field(repr=False, eq=False)
    """Seconds per call, sorted; a typed array, since a full run keeps millions of
    them and Python floats would make the harness, not the framework, the peak RSS."""
    in_flight: int = 1
    counters: Mapping[str, float] = attrs.field(factory=dict)
    """Counts that add up across rounds (``commits``, ``puts``)."""
    facts: Mapping[str, float] = attrs.field(factory=dict)
    """Descriptions of the work (``payload_bytes``, ``commits_before``...)."""

    @classmethod
    def of(
        cls, name: str, latencies: Sequence[float], seconds: float, cpu_seconds: float, *, in_flight: int = 1
    ) -> Measurement:
        ordered = array("d", sorted(latencies))
        return cls(name, len(ordered), seconds, cpu_seconds, ordered, in_flight)

    @classmethod
    def merge(cls, rounds: Sequence[Measurement]) -> Measurement:
        """One row from its rounds, in round order."""
        first, last = rounds[0], rounds[-1]
        counters: dict[str, float] = {}
        for r in rounds:
            for key, value in r.counters.items():
                counters[key] = counters.get(key, 0.0) + value
        facts = {**first.facts, **{k: v for k, v in last.facts.items() if k in LAST_ROUND_WINS}}
        return cls(
            name=first.name,
            calls=sum(r.calls for r in rounds),
            seconds=sum(r.seconds for r in rounds),
            cpu_seconds=sum(r.cpu_seconds for r in rounds),
            latencies=array("d", sorted(chain.from_iterable(r.latencies for r in rounds))),
            in_flight=first.in_flight,
            counters=counters,
            facts=facts,
        )

    def with_counters(self, **values: float) -> Measurement:
        return attrs.evolve(self, counters={**self.counters, **values})

    def with_facts(self, **values: float) -> Measurement:
        return attrs.evolve(self, facts={**self.facts, **values})

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 0.50) * 1e3

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1e3

    @property
    def cpu_us_per_call(self) -> float:
        """Steadier than the rate on a shared machine: other processes' load slows
        the wall clock, much less the CPU this process spends per call."""
        return self.cpu_seconds / self.calls * 1e6 if self.calls else 0.0

    @property
    def derived(self) -> dict[str, float]:
        """Figures computed from the counters: rates per commit and per second."""
        found: dict[str, float] = {}
        commits = self.counters.get("commits")
        if commits is not None:
            found["requests_per_commit"] = self.calls / commits if commits else 0.0
        held = self.counters.get("commit_seconds")
        if held is not None and self.seconds > 0:
            found["lock_busy"] = held / self.seconds
            spent = self.counters.get("commit_cpu_seconds", 0.0)
            found["lock_wall_per_cpu"] = held / spent if spent > 0 else 0.0
        puts = self.counters.get("puts")
        if puts is not None:
            found["puts_per_s"] = puts / self.seconds if self.seconds > 0 else 0.0
        system = self.counters.get("system_cpu_seconds")
        if system is not None and self.cpu_seconds > 0:
            found["system_share"] = min(system / self.cpu_seconds, 1.0)  # two clocks, sampled apart
        switches = self.counters.get("context_switches")
        if switches is not None and self.calls:
            found["switches_per_call"] = switches / self.calls
        return found

    def value(self, field: str) -> float | None:
        """``calls_per_s``, ``cpu_us_per_call``, or a counter, fact or derived figure, by name."""
        if field == "calls_per_s":
            return self.calls_per_s
        if field == "cpu_us_per_call":
            return self.cpu_us_per_call
        for source in (self.derived, self.counters, self.facts):
            if field in source:
                return source[field]
        return None

    def to_json(self) -> dict[str, Any]:
        extra = {**self.facts, **self.counters, **self.derived}
        return {
            "calls": self.calls,
            "seconds": round(self.seconds, 6),
            "calls_per_s": round(self.calls_per_s, 3),
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "cpu_us_per_call": round(self.cpu_us_per_call, 2),
            "in_flight": self.in_flight,
            **{key: round(value, 4) for key, value in extra.items()},
        }
