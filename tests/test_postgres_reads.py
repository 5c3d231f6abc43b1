"""Restartable reads on PostgreSQL: single statements while nothing moves, a
restart when something did, and the same answers as a transaction's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store import SnapshotMoved, WriteTxn, keys
from stigmer_core.store.postgres_store import LOOSE_QUERIES, PostgresStore


@pytest.fixture
def store(stigmer_postgres_store_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(f"{stigmer_postgres_store_url}&scan_page=2", durable=False) as opened:
        opened.transact(lambda txn: (txn.put(b"k/a", b"a1"), txn.put(b"k/b", b"b1"), txn.append_event(b"seed")))
        yield opened


def _in_transaction(txn: Any) -> bool:
    status: psycopg.pq.TransactionStatus = txn._conn.info.transaction_status
    return status != psycopg.pq.TransactionStatus.IDLE


def test_a_restartable_get_is_one_statement_outside_any_transaction(store: PostgresStore) -> None:
    with store.read(restartable=True) as txn:
        assert txn.get(b"k/a") == b"a1"
        assert txn.get(b"k/missing") is None
        assert not _in_transaction(txn)
        assert txn.revision == 1  # what both statements saw, asked of neither again
    with store.read() as strict:
        assert strict.get(b"k/a") == b"a1"
        assert _in_transaction(strict)


def test_a_write_between_two_statements_moves_the_snapshot(store: PostgresStore) -> None:
    with store.read(restartable=True) as txn:
        assert txn.get(b"k/a") == b"a1"
        store.transact(lambda w: (w.put(b"k/b", b"b2"), w.append_event(b"changed")))
        with pytest.raises(SnapshotMoved):
            txn.get(b"k/b")


def test_a_write_without_an_event_moves_it_too(store: PostgresStore) -> None:
    """A run's key or a rebuilt index moves no revision; the write count still moves."""
    with store.read(restartable=True) as txn:
        before = txn.revision
        store.transact(lambda w: w.put(b"k/b", b"b2"))
        with pytest.raises(SnapshotMoved):
            txn.get(b"k/b")
    with store.read() as fresh:
        assert fresh.revision == before


def test_a_scan_is_checked_page_by_page(store: PostgresStore) -> None:
    store.transact(lambda w: [w.put(f"s/{i}".encode(), b"x") for i in range(6)])
    with store.read(restartable=True) as txn:
        pages = txn.scan(b"s/")
        assert [next(pages)[0] for _ in range(2)] == [b"s/0", b"s/1"]  # the first page (scan_page=2)
        store.transact(lambda w: w.put(b"s/9", b"x"))
        with pytest.raises(SnapshotMoved):
            next(pages)


def test_past_the_loose_queries_it_becomes_a_transaction_checked_against_them(store: PostgresStore) -> None:
    with store.read(restartable=True) as txn:
        for _ in range(LOOSE_QUERIES):
            assert txn.get(b"k/a") == b"a1"
        store.transact(lambda w: w.put(b"k/a", b"a2"))
        with pytest.raises(SnapshotMoved):
            txn.get(b"k/a")  # begins the transaction, whose snapshot already has the write
    with store.read(restartable=True) as txn:
        for _ in range(LOOSE_QUERIES + 1):
            assert txn.get(b"k/a") == b"a2"
        assert _in_transaction(txn)
        store.transact(lambda w: w.put(b"k/a", b"a3"))
        assert txn.get(b"k/a") == b"a2"  # a snapshot from then on, as a strict read is
        assert [key for key, _ in txn.scan(b"k/")] == [b"k/a", b"k/b"]


def test_a_strict_read_never_raises(store: PostgresStore) -> None:
    with store.read() as txn:
        assert txn.get(b"k/a") == b"a1"
        store.transact(lambda w: w.put(b"k/a", b"a2"))
        assert txn.get(b"k/a") == b"a1"
        assert txn.get(b"k/b") == b"b1"


class _WriteBetween:
    """The application's store, with one real write slipped in after a read's first get."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.write: Callable[[WriteTxn], object] | None = None
        self.reads: list[bool] = []

    def read(self, *, restartable: bool = False) -> Any:
        self.reads.append(restartable)
        reader = self.inner.read(restartable=restartable)
        outer = self

        class Reader:
            def __enter__(self) -> Any:
                reader.__enter__()
                return self

            def __exit__(self, *exc: object) -> None:
                reader.__exit__(*exc)

            @property
            def revision(self) -> int:
                return reader.revision

            def get(self, key: bytes) -> bytes | None:
                found = reader.get(key)
                if outer.write is not None:
                    write, outer.write = outer.write, None
                    outer.inner.transact(write)
                return found

            def __getattr__(self, name: str) -> Any:
                return getattr(reader, name)

        return Reader()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_get_by_reference_that_saw_a_write_land_is_read_again_in_a_transaction(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """The object changes between the slug lookup and the object's read: the answer is
    the new object, read again in one snapshot, never a mix and never an error."""
    inner = PostgresStore(stigmer_postgres_store_url, durable=False)
    pm = plugin_manager()
    spy = _WriteBetween(inner)
    with Application(build_registry(pm), spy, pm, data_dir=tmp_path / "data") as app:  # type: ignore[arg-type]
        server = Server(app, "127.0.0.1:0")
        assert not server.asynchronous  # a database store: grpc's sync server, reads on the read pool
        server.start()
        try:
            with grpc.insecure_channel(server.address) as channel:
                created = agent_grpc.AgentCommandControllerStub(channel).create(
                    agent_pb2.Agent(
                        metadata=metadata_pb2.ApiResourceMetadata(name="moved"),
                        spec=agent_pb2.AgentSpec(description="before"),
                    ),
                    timeout=10,
                )
                changed = agent_pb2.Agent()
                changed.CopyFrom(created)
                changed.spec.description = "after"
                key = keys.object_key(app.registry.kind("Agent").key_prefix, created.metadata.id)
                spy.reads.clear()
                spy.write = lambda w: w.put(key, changed.SerializeToString())  # no event: the write count moves
                got = agent_grpc.AgentQueryControllerStub(channel).getByReference(
                    metadata_pb2.ApiResourceReference(slug=created.metadata.slug), timeout=10
                )
        finally:
            server.stop(None)
    assert got.spec.description == "after"
    assert spy.reads == [True, False], "one restartable attempt, then one in a transaction"


def test_gets_racing_updates_never_go_back_in_time(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    """Every answer is a state some update committed, and a later get never answers an older one."""
    with Application.open(tmp_path / "data", store=stigmer_postgres_store_url) as app:
        server = Server(app, "127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(server.address) as channel:
                command = agent_grpc.AgentCommandControllerStub(channel)
                query = agent_grpc.AgentQueryControllerStub(channel)
                agent = command.create(
                    agent_pb2.Agent(
                        metadata=metadata_pb2.ApiResourceMetadata(name="raced"),
                        spec=agent_pb2.AgentSpec(description="0"),
                    ),
                    timeout=10,
                )
                done = threading.Event()
                failures: list[BaseException] = []

                def update() -> None:
                    current = agent
                    try:
                        for i in range(1, UPDATES + 1):
                            current.spec.description = str(i)
                            current = command.update(current, timeout=10)
                    except grpc.RpcError as exc:
                        failures.append(exc)
                    finally:
                        done.set()

                writer = threading.Thread(target=update)
                writer.start()
                answers: list[int] = []
                while not done.is_set() and len(answers) < 5000:
                    answers.append(int(query.get(agent_pb2.AgentId(value=agent.metadata.id), timeout=10).spec.description))
                writer.join(timeout=60)
                assert not failures, failures
                answers.append(int(query.get(agent_pb2.AgentId(value=agent.metadata.id), timeout=10).spec.description))
        finally:
            server.stop(None)
    assert answers == sorted(answers), "a get answered an older state than the get before it"
    assert answers[-1] == UPDATES
    assert all(0 <= a <= UPDATES for a in answers)


UPDATES = 60
