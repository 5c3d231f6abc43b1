"""Applications over a chosen engine, seeded fast, for the scenarios that compare engines or sizes.

Seeding writes through the framework (the same create pipeline clients use),
on a non-durable store with many callers, since only the figures measured
afterwards matter; a store is then reopened with the durability a row asks
for. Both engines see the same objects in the same order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.agents import sample_agent, team_of
from bench.sqlite_json import SqliteJsonStore
from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.agentic.session.v1 import service_pb2_grpc as session_grpc
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import LmdbStore
from stigmer_core.store.protocol import Store

ENGINES = ("lmdb", "sqlite_json")
SEED_WORKERS = 16
SEED_SECONDS = 900.0

AGENT_COMMANDS: Callable[[Any], Any] = agent_grpc.AgentCommandControllerStub
AGENT_QUERIES: Callable[[Any], Any] = agent_grpc.AgentQueryControllerStub
SESSION_COMMANDS: Callable[[Any], Any] = session_grpc.SessionCommandControllerStub
SESSION_QUERIES: Callable[[Any], Any] = session_grpc.SessionQueryControllerStub


def open_app(engine: str, data: Path, *, durable: bool) -> Application:
    pm = plugin_manager()
    registry = build_registry(pm)
    store: Store
    if engine == "lmdb":
        store = LmdbStore(data, durable=durable)
    else:
        messages = {kind.key_prefix: kind.resource_cls for kind in registry.kinds}
        store = SqliteJsonStore(data, messages, durable=durable)
    return Application(registry, store, pm, data_dir=data)


@contextlib.contextmanager
def opened(engine: str, data: Path, *, durable: bool) -> Iterator[Application]:
    app = open_app(engine, data, durable=durable)
    try:
        yield app
    finally:
        app.close()


def seed_agents(app: Application, count: int, start: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Create agents ``start .. start+count-1``; their ids, slugs and default instance ids."""
    command = AGENT_COMMANDS(app.channel())

    def create(i: int) -> Any:
        return command.create(sample_agent(f"seed agent {i}", team_of(i)))

    with ThreadPoolExecutor(SEED_WORKERS, thread_name_prefix="bench-seed") as pool:
        agents = list(pool.map(create, range(start, start + count), timeout=SEED_SECONDS))
    return (
        [a.metadata.id for a in agents],
        [a.metadata.slug for a in agents],
        [a.status.default_instance_id for a in agents],
    )


def seed_sessions(app: Application, instance_ids: list[str], count: int, start: int = 0) -> None:
    """Sessions spread over ``instance_ids`` in turn, so each agent's index range holds count/len of them."""
    command = SESSION_COMMANDS(app.channel())

    def create(i: int) -> Any:
        session = session_pb2.Session()
        session.metadata.name = f"seed session {i}"
        session.spec.agent_instance_id = instance_ids[i % len(instance_ids)]
        return command.create(session)

    with ThreadPoolExecutor(SEED_WORKERS, thread_name_prefix="bench-seed") as pool:
        list(pool.map(create, range(start, start + count), timeout=SEED_SECONDS))


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
