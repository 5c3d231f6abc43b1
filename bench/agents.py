"""One Application with seeded Agents, served over the network and in process.

The query and create scenarios share it, so the store is seeded once per run
and both transports read the very same data: the only difference between a
``.net.`` row and an ``.inproc.`` row is the channel.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import attrs
import grpc

from bench import drive
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc
from stigmer_core.server import Server
from stigmer_core.store import LmdbStore

# The generated stub classes carry no annotations; these typed names are the boundary.
COMMAND_STUB: Callable[[Any], Any] = service_pb2_grpc.AgentCommandControllerStub
QUERY_STUB: Callable[[Any], Any] = service_pb2_grpc.AgentQueryControllerStub

SEED_WORKERS = 16
SEED_SECONDS = 120.0
TEAMS = 10
"""Seeded agents carry ``team=t<i % TEAMS>``: a label filter matches one in ten."""


def team_of(i: int) -> str:
    return f"t{i % TEAMS}"


def sample_agent(name: str, team: str) -> agent_pb2.Agent:
    """An Agent of realistic size: about 660 bytes once the server has stamped it."""
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    agent.metadata.labels["team"] = team
    agent.metadata.labels["tier"] = "bench"
    agent.spec.description = "Answers questions about the benchmark data set. " * 3
    agent.spec.instructions = "Read the request, look the answer up, reply in one short paragraph. " * 4
    return agent


def stored_agent_size() -> int:
    """Bytes of a get response, measured on a throwaway store (for the echo payload)."""
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data, Application.open(data) as app:
        command, query = COMMAND_STUB(app.channel()), QUERY_STUB(app.channel())
        created = command.create(sample_agent("size probe", "t0"))
        found: agent_pb2.Agent = query.get(agent_pb2.AgentId(value=created.metadata.id))
        return len(found.SerializeToString())


@attrs.frozen
class Transport:
    """One way to reach the application, with the driver that fits it."""

    name: str
    command: Any
    """AgentCommandControllerStub on this transport's channel."""
    query: Any
    """AgentQueryControllerStub on this transport's channel."""
    network: bool

    def measure(
        self,
        scenario: str,
        method: Any,
        request: Callable[[int], object],
        *,
        in_flight: int,
        count: int,
        seconds: float,
    ) -> Measurement:
        mode = "serial" if in_flight == 1 else f"c{in_flight}"
        name = f"{scenario}.{self.name}.{mode}"

        def call(i: int) -> object:
            return method(request(i))

        def start(i: int) -> Any:
            return method.future(request(i))

        if in_flight == 1:
            return drive.serial(name, call, count=count, seconds=seconds)
        if self.network:
            return drive.futures_window(name, start, in_flight=in_flight, count=count, seconds=seconds)
        return drive.threads(name, call, workers=in_flight, count=count, seconds=seconds)


@attrs.define
class AgentFixture:
    app: Application
    store: LmdbStore
    transports: tuple[Transport, ...]
    ids: list[str]
    slugs: list[str]
    _names: Iterator[int] = attrs.field(factory=itertools.count)

    def team_size(self, team: str) -> int:
        """Seeded agents labelled ``team=<team>``."""
        return sum(1 for i in range(len(self.ids)) if team_of(i) == team)

    def new_agent(self, label: str) -> agent_pb2.Agent:
        """An Agent whose slug no earlier call used (warm-up and measured calls alike)."""
        return sample_agent(f"bench {label} {next(self._names)}", "created")


def seed(app: Application, count: int) -> tuple[list[str], list[str]]:
    command = COMMAND_STUB(app.channel())

    def create(i: int) -> agent_pb2.Agent:
        created: agent_pb2.Agent = command.create(sample_agent(f"seed agent {i}", team_of(i)))
        return created

    with ThreadPoolExecutor(SEED_WORKERS, thread_name_prefix="bench-seed") as pool:
        agents = list(pool.map(create, range(count), timeout=SEED_SECONDS))
    return [a.metadata.id for a in agents], [a.metadata.slug for a in agents]


@contextmanager
def agent_fixture(budget: Budget) -> Iterator[AgentFixture]:
    """A durable store seeded with ``budget.seed_agents`` agents, served on 127.0.0.1."""
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory(prefix="stigmer-bench-"))
        app = stack.enter_context(Application.open(data))
        if not isinstance(app.store, LmdbStore):  # pragma: no cover - Application.open always builds one
            raise TypeError(f"expected the LMDB store, got {type(app.store).__name__}")
        ids, slugs = seed(app, budget.seed_agents)
        server = Server(app, "127.0.0.1:0")
        server.start()
        stack.callback(server.stop, 1.0)
        channel = stack.enter_context(grpc.insecure_channel(server.address))
        grpc.channel_ready_future(channel).result(timeout=10)
        local = app.channel()
        transports = (
            Transport("net", COMMAND_STUB(channel), QUERY_STUB(channel), network=True),
            Transport("inproc", COMMAND_STUB(local), QUERY_STUB(local), network=False),
        )
        yield AgentFixture(app, app.store, transports, ids, slugs)
