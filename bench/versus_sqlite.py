"""LMDB against the SQLite-JSON baseline, through the same framework.

Each engine gets the same seeded agents (``budget.baseline_agents``), then
the same calls on the in-process channel, so what differs is the storage
alone: binary protobuf under byte keys with group commit, or JSON documents
in a SQLite table (WAL, one writer). Reads and serial creates show the cost
of each read and commit; creates with calls in flight show what sharing
commits is worth; the on-disk size is read after seeding.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import Any

from bench import drive
from bench.agents import sample_agent
from bench.budget import Budget
from bench.engines import AGENT_COMMANDS, AGENT_QUERIES, ENGINES, disk_bytes, open_app, opened, seed_agents
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

PAGE = 100
READS = ("get", "get_by_reference", "list")
WRITES = ("create.nosync.serial", "create.durable.serial", "create.durable.c32")


def _reads(engine: str, app: Any, ids: list[str], slugs: list[str], budget: Budget) -> dict[str, Any]:
    """The read calls of one engine, checked once: a fast wrong answer would pass for a speed-up."""
    query = AGENT_QUERIES(app.channel())
    gets = [agent_pb2.AgentId(value=i) for i in ids]
    refs = [metadata_pb2.ApiResourceReference(slug=s) for s in slugs]
    page = agent_pb2.ListAgentsRequest(org="local", page_size=PAGE)
    if query.get(gets[0]).metadata.id != ids[0] or len(query.list(page).entries) != min(PAGE, len(ids)):
        raise drive.CallFailed(f"vs_sqlite.{engine}: wrong answer, not measured")
    return {
        "get": (lambda i: query.get(gets[i % len(gets)]), budget.calls),
        "get_by_reference": (lambda i: query.getByReference(refs[i % len(refs)]), budget.calls),
        "list": (lambda i: query.list(page), budget.list_calls),
    }


def _create(app: Any, numbers: Any) -> Any:
    command = AGENT_COMMANDS(app.channel())

    def call(i: int) -> object:
        return command.create(sample_agent(f"vs agent {next(numbers)}", "created"))

    return call


def _measure_create(engine: str, mode: str, app: Any, call: Any, in_flight: int, budget: Budget) -> Measurement:
    store = app.store
    before = store.commits
    if in_flight == 1:
        row = drive.serial(
            f"vs_sqlite.{engine}.create.{mode}.serial", call, count=budget.creates, seconds=budget.seconds
        )
    else:
        name = f"vs_sqlite.{engine}.create.{mode}.c{in_flight}"
        row = drive.threads(name, call, workers=in_flight, count=budget.concurrent_creates, seconds=budget.seconds)
    return row.with_counters(commits=store.commits - before)


def run(budget: Budget) -> list[Measurement]:
    """Both engines seeded alike, then each row measured on one engine right after the other,
    so load drifting on a shared machine falls on both sides of a ratio alike."""
    found: list[Measurement] = []
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:
        data = {
            e: Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"stigmer-bench-{e}-"))) for e in ENGINES
        }
        seeded = {}
        for engine in ENGINES:
            with opened(engine, data[engine], durable=False) as app:
                seeded[engine] = seed_agents(app, budget.baseline_agents)
        size = {e: disk_bytes(data[e]) for e in ENGINES}
        for durable in (True, False):
            apps = {e: open_app(e, data[e], durable=durable) for e in ENGINES}
            try:
                found += _round(apps, seeded, size, durable, budget, numbers)
            finally:
                for app in apps.values():
                    app.close()
    return found


def _round(
    apps: dict[str, Any], seeded: dict[str, Any], size: dict[str, int], durable: bool, budget: Budget, numbers: Any
) -> list[Measurement]:
    found: list[Measurement] = []
    mode = "durable" if durable else "nosync"
    if durable:
        reads = {e: _reads(e, apps[e], seeded[e][0], seeded[e][1], budget) for e in ENGINES}
        for name in READS:
            for engine in ENGINES:
                call, count = reads[engine][name]
                drive.warm(call, budget.warmup)
                row = drive.serial(f"vs_sqlite.{engine}.{name}", call, count=count, seconds=budget.seconds)
                found.append(row.with_facts(disk_bytes=size[engine], stored_agents=budget.baseline_agents))
    creates = {e: _create(apps[e], numbers) for e in ENGINES}
    for engine in ENGINES:
        drive.warm(creates[engine], max(1, budget.warmup // 4))
    for in_flight in (1, budget.in_flight) if durable else (1,):
        for engine in ENGINES:
            found.append(_measure_create(engine, mode, apps[engine], creates[engine], in_flight, budget))
    return found
