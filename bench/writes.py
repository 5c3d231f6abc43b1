"""The write path beyond create: update, apply, delete with cascades, and a kind without steps.

Every row runs on a durable LMDB store on the in-process channel, serial and
with calls in flight, so the figures are the framework's and the commit's,
not grpc's. An Agent create carries its default instance (one more object,
index entries and event), so creates of an Environment with no secrets (a
kind whose one step has nothing to do) show what the bare pipeline costs.
Deletes remove an agent, its default instance and a session: a cascade.

The framework's own CPU per request, commit excluded, is the in-process CPU
per call on a store that does not sync, less the CPU of a raw store
transaction doing the same number of commits (``store.put`` rows' shape);
the requests are built before the clock starts.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import drive
from bench.agents import sample_agent
from bench.budget import Budget
from bench.commit_cpu import commits_timed
from bench.engines import AGENT_COMMANDS, AGENT_QUERIES, SESSION_COMMANDS, opened, seed_agents
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as environment_grpc
from stigmer_core.api.agentic.session.v1 import session_pb2

ENVIRONMENT_COMMANDS: Callable[[Any], Any] = environment_grpc.EnvironmentCommandControllerStub
DELETES_SEEDED = 4000
"""Agents (each with an instance and a session) seeded per delete row; the time limit usually ends it first."""
CPU_CALLS = 2000


def _both(name: str, call: Callable[[int], object], budget: Budget, count: int | None = None) -> list[Measurement]:
    serial = drive.serial(f"writes.{name}.serial", call, count=count or budget.creates, seconds=budget.seconds)
    c = budget.in_flight
    many = drive.threads(
        f"writes.{name}.c{c}", call, workers=c, count=count or budget.concurrent_creates, seconds=budget.seconds
    )
    return [serial, many]


def _environment(name: str) -> environment_pb2.Environment:
    env = environment_pb2.Environment()
    env.metadata.name = name
    env.spec.description = "Values a run starts with. " * 8
    for i in range(4):
        value = env.spec.data[f"SETTING_{i}"]
        value.value = f"value {i}"
    return env


def _cpu_us(call: Callable[[int], object], count: int) -> float:
    drive.warm(call, count // 10)
    begin = time.thread_time()
    for i in range(count):
        call(i)
    return (time.thread_time() - begin) / count * 1e6


def _built(make: Callable[[str], Any], names: Iterator[int], count: int) -> Callable[[int], Any]:
    """Requests made before the clock starts, so a create's figure holds the server's work
    only, not the caller's building of its message (3 µs of an Environment's); ``_cpu_us``
    asks for its warm-up's tenth more."""
    made = iter([make(f"cpu {next(names)}") for _ in range(count + count // 10)])
    return lambda _: next(made)


def _framework_cpu(data: Path) -> list[Measurement]:
    """CPU per in-process create and get on a store that does not sync, less a raw transaction's."""
    names = itertools.count()
    with opened("lmdb", data / "cpu", durable=False) as app:
        commands, queries = AGENT_COMMANDS(app.channel()), AGENT_QUERIES(app.channel())
        envs = ENVIRONMENT_COMMANDS(app.channel())
        made = commands.create(sample_agent("cpu probe", "t0"))
        probe = agent_pb2.AgentId(value=made.metadata.id)
        agents = _built(lambda name: sample_agent(name, "t0"), names, CPU_CALLS)
        create = _cpu_us(lambda i: commands.create(agents(i)), CPU_CALLS)
        environments = _built(_environment, names, CPU_CALLS)
        env = _cpu_us(lambda i: envs.create(environments(i)), CPU_CALLS)
        get = _cpu_us(lambda i: queries.get(probe), CPU_CALLS * 5)
        store = app.store
        raw = made.SerializeToString()

        def put(i: int) -> None:
            store.transact(lambda txn: txn.put(b"bench/cpu/%d" % i, raw))

        def read(i: int) -> None:
            with store.read() as txn:
                txn.get(b"bench/cpu/1")

        put_us = _cpu_us(put, CPU_CALLS)
        read_us = _cpu_us(read, CPU_CALLS * 5)
        with commits_timed(store) as spent:  # _cpu_us's warm-up calls commit too: counted in both
            agents = _built(lambda name: sample_agent(name, "t0"), names, CPU_CALLS)
            timed = _cpu_us(lambda i: commands.create(agents(i)), CPU_CALLS)
            own_commit = spent[0] / (CPU_CALLS + CPU_CALLS // 10) * 1e6
    facts = {
        "agent_create_us": create - put_us,
        "environment_create_us": env - put_us,
        "get_us": get - read_us,
        "raw_txn_us": put_us,
        "raw_read_us": read_us,
        # the same figure in units of a raw one-put transaction of this run: machines differ
        # in speed by a third from run to run here, this ratio far less
        "agent_create_per_raw_txn": (create - put_us) / put_us,
        # the create's own commit calls timed (its pages written out), instead of a raw
        # one-put transaction's whole cost: what "commit excluded" means taken literally
        "agent_create_own_commit_us": own_commit,
        "agent_create_less_own_commit_us": timed - own_commit,
    }
    return [Measurement.of("writes.framework_cpu", [0.0], 1.0, 0.0).with_facts(**facts)]


def run(budget: Budget) -> list[Measurement]:
    found: list[Measurement] = []
    numbers = itertools.count()
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-writes-") as tmp:
        data = Path(tmp)
        deletable: dict[str, list[str]] = {}
        with opened("lmdb", data / "store", durable=False) as app:
            ids, _, _instances = seed_agents(app, budget.seed_agents)
            sessions = SESSION_COMMANDS(app.channel())
            for mode in ("serial", "many"):
                doomed, _, doomed_instances = seed_agents(
                    app, DELETES_SEEDED, start=len(ids) + len(deletable) * DELETES_SEEDED
                )
                for instance in doomed_instances:
                    session = session_pb2.Session()
                    session.metadata.name = f"doomed session {next(numbers)}"
                    session.spec.agent_instance_id = instance
                    sessions.create(session)
                deletable[mode] = doomed
        with opened("lmdb", data / "store", durable=True) as app:
            commands, queries = AGENT_COMMANDS(app.channel()), AGENT_QUERIES(app.channel())
            envs = ENVIRONMENT_COMMANDS(app.channel())
            stored = [queries.get(agent_pb2.AgentId(value=i)) for i in ids]
            counter = itertools.count()
            lock = threading.Lock()

            def update(i: int) -> object:
                agent = agent_pb2.Agent()
                agent.CopyFrom(stored[i % len(stored)])
                agent.metadata.resource_version = 0
                agent.spec.description = f"updated {next(counter)}"
                return commands.update(agent)

            def apply_unchanged(i: int) -> object:
                return commands.apply(stored[i % len(stored)])

            def apply_changed(i: int) -> object:
                agent = agent_pb2.Agent()
                agent.CopyFrom(stored[i % len(stored)])
                agent.metadata.resource_version = 0
                agent.spec.instructions = f"applied {next(counter)}"
                return commands.apply(agent)

            def create_agent(i: int) -> object:
                return commands.create(sample_agent(f"writes agent {next(numbers)}", "created"))

            def create_environment(i: int) -> object:
                return envs.create(_environment(f"writes env {next(numbers)}"))

            for name, call in (  # unchanged first: the others change what is stored
                ("apply_unchanged", apply_unchanged),
                ("update", update),
                ("apply_changed", apply_changed),
                ("create_agent", create_agent),
                ("create_environment", create_environment),
            ):
                drive.warm(call, budget.warmup // 4)
                found += _both(name, call, budget)

            def deleter(doomed: list[str]) -> Callable[[int], object]:
                def delete(i: int) -> object:
                    with lock:
                        target = doomed.pop()
                    return commands.delete(agent_pb2.AgentId(value=target))

                return delete

            serial_delete, many_delete = deleter(deletable["serial"]), deleter(deletable["many"])
            found.append(
                drive.serial(
                    "writes.delete_cascade.serial", serial_delete, count=DELETES_SEEDED, seconds=budget.seconds
                )
            )
            found.append(
                drive.threads(
                    f"writes.delete_cascade.c{budget.in_flight}",
                    many_delete,
                    workers=budget.in_flight,
                    count=DELETES_SEEDED,
                    seconds=budget.seconds,
                )
            )
        found += _framework_cpu(data)
    return found
