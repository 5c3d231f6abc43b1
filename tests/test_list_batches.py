"""A page read through an index (an org's slugs, a label, a declared index) gets its objects a
batch at a time: on a database a get each was a round trip each, 100 for a page. Each page must
still hold exactly what the one-by-one reading held, on both engines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kinds.registry import build_registry
from stigmer_core.limits import Limits
from stigmer_core.pipeline import steps
from stigmer_core.plugins import plugin_manager
from stigmer_core.store.postgres_store import PostgresStore
from tests.engine_support import OpenStore, engine  # noqa: F401 - the fixture

ORG = "local"


@pytest.fixture
def app(engine: OpenStore, tmp_path: Path) -> Iterator[Application]:  # noqa: F811 - the fixture above
    pm = plugin_manager()
    application = Application(build_registry(pm), engine(), pm, data_dir=tmp_path / "data")
    try:
        yield application
    finally:
        application.close()


def _agent(name: str, team: str, instructions: str = "") -> agent_pb2.Agent:
    return agent_pb2.Agent(
        metadata=metadata_pb2.ApiResourceMetadata(name=name, org=ORG, labels={"team": team}),
        spec=agent_pb2.AgentSpec(instructions=instructions),
    )


def _every_page(queries: Any, request: agent_pb2.ListAgentsRequest) -> tuple[list[int], list[str]]:
    """Page to the end: each page's size, and the slugs listed in order."""
    sizes: list[int] = []
    slugs: list[str] = []
    while True:
        page = queries.list(request)
        sizes.append(len(page.entries))
        slugs += [entry.metadata.slug for entry in page.entries]
        if not page.next_page_token:
            return sizes, slugs
        request.page_token = page.next_page_token


@pytest.mark.parametrize("size", [1, 7, 16, 17, 100])
def test_pages_by_slug_and_by_label_list_every_object_once_in_order(app: Application, size: int) -> None:
    commands = agent_grpc.AgentCommandControllerStub(app.channel())
    queries = agent_grpc.AgentQueryControllerStub(app.channel())
    made = [commands.create(_agent(f"a{i:03d}", "red" if i % 3 else "blue")).metadata.slug for i in range(60)]
    sizes, slugs = _every_page(queries, agent_pb2.ListAgentsRequest(org=ORG, page_size=size))
    assert slugs == sorted(made) and all(n == size for n in sizes[:-1])
    red = [slug for i, slug in enumerate(made) if i % 3]
    sizes, slugs = _every_page(queries, agent_pb2.ListAgentsRequest(org=ORG, page_size=size, labels={"team": "red"}))
    assert sorted(slugs) == sorted(red) and len(slugs) == len(red) and all(n == size for n in sizes[:-1])


def test_a_page_of_large_objects_reads_batches_the_page_bytes_hold(app: Application) -> None:
    """Objects near the page's byte budget: the batches shrink to what a page holds, and every
    page still stops at the budget and the next goes on where it stopped."""
    app.registry.limits = Limits(max_object_bytes=40_000, max_page_bytes=120_000)
    commands = agent_grpc.AgentCommandControllerStub(app.channel())
    queries = agent_grpc.AgentQueryControllerStub(app.channel())
    made = [commands.create(_agent(f"big{i:02d}", "red", "x" * 30_000)).metadata.slug for i in range(40)]
    sizes, slugs = _every_page(queries, agent_pb2.ListAgentsRequest(org=ORG, page_size=100))
    assert slugs == sorted(made)
    assert all(1 <= n <= 3 for n in sizes) and sum(sizes) == 40


def test_a_batch_holds_no_more_objects_than_the_page_bytes_hold_after_the_first(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch is ``FIRST_OBJECTS``; the next are sized from the objects seen, so a page
    of large objects never holds many of them in memory at once."""
    app.registry.limits = Limits(max_object_bytes=40_000, max_page_bytes=120_000)
    commands = agent_grpc.AgentCommandControllerStub(app.channel())
    queries = agent_grpc.AgentQueryControllerStub(app.channel())
    for i in range(40):
        commands.create(_agent(f"big{i:02d}", "red", "x" * 30_000))
    batches: list[int] = []
    real = steps._objects_of

    def counted(txn: Any, *args: Any) -> Any:
        get_many = txn.get_many

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(txn, name)

            def get_many(self, keys: list[bytes]) -> list[bytes | None]:
                batches.append(len(keys))
                return get_many(keys)

        return real(Counting(), *args)

    monkeypatch.setattr(steps, "_objects_of", counted)
    page = queries.list(agent_pb2.ListAgentsRequest(org=ORG, page_size=100))
    assert len(page.entries) == 3
    assert batches == [steps.FIRST_OBJECTS]  # its 3 objects were in the first batch
    batches.clear()
    monkeypatch.setattr(steps, "FIRST_OBJECTS", 2)
    page = queries.list(agent_pb2.ListAgentsRequest(org=ORG, page_size=100))
    assert len(page.entries) == 3
    assert batches[0] == 2 and all(n <= 4 for n in batches[1:]), batches  # ~120 kB / ~30 kB a batch


def test_a_team_server_page_by_slug_takes_a_few_statements(stigmer_postgres_store_url: str, tmp_path: Path) -> None:
    """A page of 100 of an org's agents sent a get per agent: 100 round trips, 15.9 ms a page in
    process where the kind's own range took 1.2."""
    pm = plugin_manager()
    store = PostgresStore(stigmer_postgres_store_url, durable=False)
    with Application(build_registry(pm), store, pm, data_dir=tmp_path / "data") as app:
        _count_statements_of_pages(app)


def _count_statements_of_pages(app: Application) -> None:
    commands = agent_grpc.AgentCommandControllerStub(app.channel())
    queries = agent_grpc.AgentQueryControllerStub(app.channel())
    for i in range(150):
        commands.create(_agent(f"a{i:03d}", "red"))
    statements = [0]
    execute = psycopg.Cursor.execute
    me = threading.get_ident()

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        statements[0] += threading.get_ident() == me
        return execute(self, *args, **kwargs)

    psycopg.Cursor.execute = counted  # type: ignore[method-assign]
    try:
        page = queries.list(agent_pb2.ListAgentsRequest(org=ORG, page_size=100))
        by_label = queries.list(agent_pb2.ListAgentsRequest(org=ORG, page_size=100, labels={"team": "red"}))
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    assert len(page.entries) == 100 and len(by_label.entries) == 100
    assert statements[0] <= 14, statements  # each: the scan, a batch of 16, BEGIN, the rest, ROLLBACK
