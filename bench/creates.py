"""Agent create on the durable store, one caller versus many.

A serial create pays a whole durable commit (two fsyncs) alone; creates in
flight together should share commits (group commit). The store's commit
counter, read before and after, shows how many requests each commit carried,
which is the number to watch when the write path changes: a rate can rise
for many reasons, requests per commit only because batching works.

Batches take turns on the store's write lock, so the share of the run it
was held (``lock_busy``) says whether it is what limits the rate: near 1,
only a shorter hold can raise it. Its wall time against the CPU the
committing threads spent in it (``lock_wall_per_cpu``) says how much of a
hold was waiting, for the GIL or the disk, rather than work.
"""

from __future__ import annotations

from bench import drive
from bench.agents import AgentFixture, Transport
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2


def _creates(fixture: AgentFixture, transport: Transport, in_flight: int, count: int, budget: Budget) -> Measurement:
    label = f"{transport.name} c{in_flight}"

    def request(i: int) -> agent_pb2.Agent:
        # Built on the clock (about 1 µs, next to a create's hundreds): prebuilding
        # every request the count allows would hold tens of MB and skew peak RSS.
        return fixture.new_agent(label)

    store = fixture.store
    before, wall, cpu = store.commits, store.commit_seconds, store.commit_cpu_seconds
    measured = transport.measure(
        "create", transport.command.create, request, in_flight=in_flight, count=count, seconds=budget.seconds
    )
    after = store.commits
    return measured.with_counters(
        commits=after - before,
        commit_seconds=store.commit_seconds - wall,
        commit_cpu_seconds=store.commit_cpu_seconds - cpu,
    ).with_facts(commits_before=before, commits_after=after)


def _warm(fixture: AgentFixture, transport: Transport, count: int) -> None:
    requests = [fixture.new_agent(f"{transport.name} warm") for _ in range(count)]
    drive.warm(lambda i: transport.command.create(requests[i]), count)


def create(fixture: AgentFixture, budget: Budget) -> list[Measurement]:
    found: list[Measurement] = []
    for transport in fixture.transports:
        _warm(fixture, transport, budget.warmup // 4)
        found.append(_creates(fixture, transport, 1, budget.creates, budget))
        found.append(_creates(fixture, transport, budget.in_flight, budget.concurrent_creates, budget))
    return found
