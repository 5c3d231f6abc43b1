"""LMDB against the SQLite-JSON baseline, through the same framework.

Each engine gets the same seeded agents (``budget.baseline_agents``), then
the same calls on the in-process channel, so what differs is the storage
alone: binary protobuf under byte keys with group commit, or JSON documents
in a SQLite table (WAL, one writer). Reads and serial creates show the cost
of each read and commit; creates with calls in flight show what sharing
commits is worth; the on-disk size is read after seeding.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from bench import drive
from bench.agents import sample_agent
from bench.budget import Budget
from bench.engines import AGENT_COMMANDS, AGENT_QUERIES, ENGINES, disk_bytes, opened, seed_agents
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

PAGE = 100
READS = ("get", "get_by_reference", "list")
WRITES = ("create.nosync.serial", "create.durable.serial", "create.durable.c32")


def _reads(engine: str, app: Any, ids: list[str], slugs: list[str], budget: Budget) -> list[Measurement]:
    query = AGENT_QUERIES(app.channel())
    gets = [agent_pb2.AgentId(value=i) for i in ids]
    refs = [metadata_pb2.ApiResourceReference(slug=s) for s in slugs]
    page = agent_pb2.ListAgentsRequest(org="local", page_size=PAGE)
    if query.get(gets[0]).metadata.id != ids[0] or len(query.list(page).entries) != min(PAGE, len(ids)):
        raise drive.CallFailed(f"vs_sqlite.{engine}: wrong answer, not measured")
    calls = {
        "get": (lambda i: query.get(gets[i % len(gets)]), budget.calls),
        "get_by_reference": (lambda i: query.getByReference(refs[i % len(refs)]), budget.calls),
        "list": (lambda i: query.list(page), budget.list_calls),
    }
    found = []
    for name, (call, count) in calls.items():
        drive.warm(call, budget.warmup)
        found.append(drive.serial(f"vs_sqlite.{engine}.{name}", call, count=count, seconds=budget.seconds))
    return found


def _creates(engine: str, app: Any, durable: bool, budget: Budget, numbers: Any) -> list[Measurement]:
    command = AGENT_COMMANDS(app.channel())

    def call(i: int) -> object:
        return command.create(sample_agent(f"vs agent {next(numbers)}", "created"))

    mode = "durable" if durable else "nosync"
    drive.warm(call, max(1, budget.warmup // 4))
    store = app.store
    found = []
    runs = [(1, budget.creates)] + ([(budget.in_flight, budget.concurrent_creates)] if durable else [])
    for in_flight, count in runs:
        before = store.commits
        if in_flight == 1:
            row = drive.serial(f"vs_sqlite.{engine}.create.{mode}.serial", call, count=count, seconds=budget.seconds)
        else:
            name = f"vs_sqlite.{engine}.create.{mode}.c{in_flight}"
            row = drive.threads(name, call, workers=in_flight, count=count, seconds=budget.seconds)
        found.append(row.with_counters(commits=store.commits - before))
    return found


def run(budget: Budget) -> list[Measurement]:
    found: list[Measurement] = []
    numbers = itertools.count()
    for engine in ENGINES:
        with tempfile.TemporaryDirectory(prefix=f"stigmer-bench-{engine}-") as tmp:
            data = Path(tmp)
            with opened(engine, data, durable=False) as app:
                ids, slugs, _ = seed_agents(app, budget.baseline_agents)
            size = disk_bytes(data)
            with opened(engine, data, durable=True) as app:
                reads = _reads(engine, app, ids, slugs, budget)
                found += [r.with_facts(disk_bytes=size, stored_agents=len(ids)) for r in reads]
                found += _creates(engine, app, True, budget, numbers)
            with opened(engine, data, durable=False) as app:
                found += _creates(engine, app, False, budget, numbers)
    return found
