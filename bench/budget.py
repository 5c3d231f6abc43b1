"""How many calls, and how many seconds at most, each measurement may take.

In a full run the time limit is what normally ends a measurement (the counts
are set above what the time allows, so every row averages over the same span
of machine noise), keeping the run near two and a half minutes on two shared cores. The
budget of a row is split over ``rounds`` (every scenario runs once per round,
in turn), so slow drifts in the machine's load fall on all rows alike. Scenarios that seed
stores of their own (the SQLite-JSON comparison, the scale rows) run once,
in the first round, with a third of the time limit per row. The
quick run (the smoke test's) is sized to stay well under twenty seconds; its
numbers only show that every scenario works.
"""

from __future__ import annotations

import math

import attrs

_PER_ROUND = ("calls", "concurrent_calls", "list_calls", "creates", "concurrent_creates", "store_puts", "batches")


@attrs.frozen
class Budget:
    calls: int
    """Serial calls of a cheap rpc (echo, get, getByReference)."""
    concurrent_calls: int
    """Calls of a cheap rpc with ``in_flight`` outstanding."""
    list_calls: int
    """List calls (each returns a page of 100 agents)."""
    creates: int
    """Serial creates (one durable commit each)."""
    concurrent_creates: int
    """Creates with ``in_flight`` outstanding (sharing commits)."""
    store_puts: int
    """Raw store transactions of one put each."""
    seconds: float
    """Time limit of any one measurement."""
    warmup: int
    """Untimed calls before each measurement."""
    seed_agents: int
    """Agents in the store before the query scenarios run."""
    traced_creates: int
    """Creates run under tracemalloc for the memory figure."""
    traced_seconds: float
    """Time limit of the traced creates (tracing slows every allocation)."""
    in_flight: int = 32
    store_threads: int = 16
    batch_puts: int = 1000
    """Puts in each transaction of the batched store scenario."""
    batches: int = 50
    """Transactions of ``batch_puts`` puts each."""
    rounds: int = 1
    baseline_agents: int = 10_000
    """Agents seeded into each engine before the LMDB vs SQLite-JSON rows."""
    scale_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    """Stored agents at which the scale rows are measured (one store, growing)."""

    def per_round(self) -> Budget:
        """One round's share of every count and of the time limit."""
        shares = {name: math.ceil(getattr(self, name) / self.rounds) for name in _PER_ROUND}
        return attrs.evolve(self, seconds=self.seconds / self.rounds, **shares)


FULL = Budget(
    calls=400_000,
    concurrent_calls=400_000,
    list_calls=20_000,
    creates=20_000,
    concurrent_creates=60_000,
    store_puts=60_000,
    seconds=6.0,
    warmup=200,
    seed_agents=1000,
    traced_creates=1000,
    traced_seconds=40.0,
    rounds=6,
)

QUICK = Budget(
    calls=3000,
    concurrent_calls=3000,
    list_calls=300,
    creates=300,
    concurrent_creates=1000,
    store_puts=1000,
    seconds=0.4,
    warmup=40,
    seed_agents=1000,
    traced_creates=200,
    traced_seconds=5.0,
    batches=6,
    rounds=2,
    baseline_agents=300,
    scale_sizes=(1_000, 2_000),
)
