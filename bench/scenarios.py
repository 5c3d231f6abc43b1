"""Which scenarios exist, what each needs, and one run over a selection of them.

The seeded Application is opened only if a selected scenario reads it, and
at most once; the echo baseline runs with any scenario whose ratios divide by
it, so ``--only get`` still prints get against bare grpcio. Scenarios take
turns, once per round, so a ratio's two rows are measured close in time.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import cache

import attrs

from bench import (
    agents,
    creates,
    drive,
    echo,
    memory,
    metrics_cost,
    queries,
    scale,
    store_puts,
    streams,
    versus_sqlite,
    writes,
)
from bench.agents import AgentFixture
from bench.budget import Budget
from bench.results import Measurement

AgentScenario = Callable[[AgentFixture, Budget], list[Measurement]]
Log = Callable[[str], None]


@attrs.frozen
class Scenario:
    name: str
    about: str
    with_baseline: bool = False
    """Also run the echo baseline, which this scenario's ratios divide by."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("echo", "bare grpcio echo server: the baseline"),
    Scenario("get", "Agent get by id, serial and with calls in flight", with_baseline=True),
    Scenario("get_by_reference", "Agent getByReference (org + slug)", with_baseline=True),
    Scenario("list", "Agent list, first page of 100"),
    Scenario("list_label", "Agent list with a label filter, a page of 100"),
    Scenario("create", "Agent create on the durable store, serial and with calls in flight", with_baseline=True),
    Scenario("store", "raw LmdbStore transactions: one put from 1 and from many threads, 1,000 puts in one"),
    Scenario("vs_sqlite", "LMDB vs a SQLite table of JSON documents, same framework (once)"),
    Scenario("scale", "queries at growing store sizes, and a daemon's RSS at the largest (once)"),
    Scenario("writes", "update, apply, delete with cascades, a kind without steps; framework CPU per request (once)"),
    Scenario("streams", "daemon CPU per create with 60 watches open, on the event loop and on threads (once)"),
    Scenario("metrics", "get and create in flight through a daemon serving metrics vs one without (once)"),
    Scenario("memory", "tracemalloc of serial in-process creates (once, after the rounds)"),
)

ONCE = frozenset({"vs_sqlite", "scale", "writes", "streams", "metrics"})
"""Scenarios that seed stores of their own: run in the first round only."""

NAMES: tuple[str, ...] = tuple(s.name for s in SCENARIOS)

_ON_AGENTS: dict[str, AgentScenario] = {
    "get": queries.get,
    "get_by_reference": queries.get_by_reference,
    "list": queries.list_page,
    "list_label": queries.list_by_label,
    "create": creates.create,
}


@attrs.define
class RunResult:
    rounds: list[dict[str, Measurement]]
    """Each round's rows by name."""
    memory: dict[str, float]
    ran: list[str]
    seconds: float
    failures: dict[str, str] = attrs.field(factory=dict)
    """Scenario name -> why it was not measured (a failed call or a wrong answer)."""
    load_average: tuple[float, float] = (0.0, 0.0)
    """One-minute load average before and after: how busy the machine was besides."""
    measurements: list[Measurement] = attrs.field(factory=list)
    """Rows merged over the rounds, in the order they were first measured."""


def _merged(rounds: Sequence[dict[str, Measurement]]) -> list[Measurement]:
    names = dict.fromkeys(name for rows in rounds for name in rows)
    return [Measurement.merge([rows[name] for rows in rounds if name in rows]) for name in names]


def selection(only: str | None) -> list[str]:
    """Scenario names to run, in table order."""
    if only is None:
        return list(NAMES)
    chosen = {only}
    if any(s.name == only and s.with_baseline for s in SCENARIOS):
        chosen.add("echo")
    return [name for name in NAMES if name in chosen]


class _Runner:
    """Runs one scenario for one round, opening what it needs on first use."""

    def __init__(self, budget: Budget, stack: ExitStack, log: Log) -> None:
        self.budget = budget
        self.round_budget = budget.per_round()
        self._stack = stack
        self._log = log
        self._fixture: AgentFixture | None = None
        self.payload_size = cache(agents.stored_agent_size)

    def fixture(self) -> AgentFixture:
        if self._fixture is None:
            self._log(f"seeding {self.budget.seed_agents} agents")
            self._fixture = self._stack.enter_context(agents.agent_fixture(self.budget))
        return self._fixture

    def run(self, name: str) -> list[Measurement]:
        if name == "echo":
            return echo.run(self.round_budget, self.payload_size())
        if name == "store":
            return store_puts.run(self.round_budget)
        if name in ONCE:
            once = attrs.evolve(self.round_budget, seconds=self.budget.seconds / 3)
            scenario = {
                "vs_sqlite": versus_sqlite.run,
                "scale": scale.run,
                "writes": writes.run,
                "streams": streams.run,
                "metrics": metrics_cost.run,
            }
            return scenario[name](once)
        return _ON_AGENTS[name](self.fixture(), self.round_budget)


def run(names: Sequence[str], budget: Budget, log: Log = lambda text: None) -> RunResult:
    """Run ``names`` in turn, ``budget.rounds`` times; a scenario that fails is
    reported, dropped from every round, and the others still run."""
    begin = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = RunResult([], {}, [], 0.0)
    per_round = [name for name in names if name != "memory"]
    with ExitStack() as stack:
        runner = _Runner(budget, stack, log)
        for number in range(1, budget.rounds + 1):
            rows: dict[str, Measurement] = {}
            for name in per_round:
                if name in result.failures or (name in ONCE and number > 1):
                    continue
                log(f"round {number}/{budget.rounds}: {name}")
                try:
                    rows.update((m.name, m) for m in runner.run(name))
                except Exception as exc:  # one broken scenario must not hide the others' numbers
                    log(f"{name} failed:\n{traceback.format_exc()}")
                    result.failures[name] = str(exc) if isinstance(exc, drive.CallFailed) else repr(exc)
            result.rounds.append(rows)
    if "memory" in names:
        log("memory")
        try:
            result.memory = memory.traced_creates(budget.traced_creates, budget.traced_seconds)
        except Exception as exc:
            log(f"memory failed:\n{traceback.format_exc()}")
            result.failures["memory"] = repr(exc)
    failed_rows = {m.name for rows in result.rounds for m in rows.values() if _scenario_of(m.name) in result.failures}
    for rows in result.rounds:
        for name in failed_rows:
            rows.pop(name, None)
    result.measurements = _merged(result.rounds)
    result.ran = [name for name in names if name not in result.failures]
    result.seconds = time.perf_counter() - begin
    result.load_average = (load_before, os.getloadavg()[0])
    return result


def _scenario_of(row: str) -> str:
    """``get.net.c32`` -> ``get``; ``store.put.t1`` -> ``store``."""
    return row.split(".", 1)[0]
