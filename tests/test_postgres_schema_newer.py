"""A daemon left running while a newer release migrated its schema (a rolling upgrade): its calls
that the changed tables break are refused FAILED_PRECONDITION naming both versions (they were
INTERNAL), and its health turns NOT_SERVING so a load balancer drains it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, errors, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.server import PoolSizes
from stigmer_core.store import WriteTxn
from stigmer_core.store.postgres_schema import VERSION
from stigmer_core.store.postgres_store import PostgresStore
from tests.plugin_server_support import health_becomes, serving

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _newer_release_migrates(store: PostgresStore, *statements: str, version: int = VERSION + 1) -> None:
    """What a release of a newer schema ``version`` would do at its start, in one transaction."""
    schema = f'"{store.schema}"'
    with psycopg.connect(store.settings.conninfo) as conn:
        for statement in statements:
            conn.execute(statement.replace("{s}", schema).encode())
        conn.execute(f"INSERT INTO {schema}.schema_version (version) VALUES (%s)".encode(), (version,))


def _agent(name: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name), spec=agent_pb2.AgentSpec())


@pytest.fixture
def served(tmp_path: Path, stigmer_postgres_store_url: str) -> Iterator[tuple[Application, grpc.Channel]]:
    app = Application.open(tmp_path / "data", store=stigmer_postgres_store_url)
    try:
        with serving(app, PoolSizes(rpc_threads=8)) as (_, channel):
            yield app, channel
    finally:
        app.close()


def test_a_write_the_newer_schema_breaks_is_refused_naming_both_versions_and_health_drains(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    assert isinstance(app.store, PostgresStore)
    command = agent_grpc.AgentCommandControllerStub(channel)
    query = agent_grpc.AgentQueryControllerStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    first = command.create(_agent("before"), timeout=10)
    assert health_becomes(health, SERVING)

    # A column every commit locks and writes is renamed, as version 4 renamed event_bytes.
    _newer_release_migrates(app.store, "ALTER TABLE {s}.meta RENAME COLUMN log_bytes TO log_size")

    with pytest.raises(grpc.RpcError) as caught:
        command.create(_agent("after"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    refused = from_rpc_error(caught.value)
    assert refused.reason == "SCHEMA_NEWER"
    assert refused.metadata["schemaVersion"] == str(VERSION + 1)
    assert refused.metadata["knownVersion"] == str(VERSION)
    message = caught.value.details() or ""
    assert f"version {VERSION + 1}, newer than" in message and f"knows ({VERSION})" in message, message
    assert "Restart this daemon with that newer stigmer-core" in message, message
    assert health_becomes(health, NOT_SERVING)

    # Reads the migration left alone go on; one it broke is refused the same way.
    assert query.get(agent_pb2.AgentId(value=first.metadata.id), timeout=10).metadata.name == "before"
    _newer_release_migrates(app.store, "ALTER TABLE {s}.kv RENAME COLUMN value TO payload", version=VERSION + 2)
    with pytest.raises(grpc.RpcError) as caught:
        query.get(agent_pb2.AgentId(value=first.metadata.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    assert from_rpc_error(caught.value).reason == "SCHEMA_NEWER"


def test_a_read_the_newer_schema_breaks_is_refused_and_health_told_before_the_answer(
    stigmer_postgres_store_url: str,
) -> None:
    with PostgresStore(stigmer_postgres_store_url, durable=False) as store:
        store.transact(lambda txn: txn.put(b"o/k", b"v"))
        told: list[bool] = []
        store.on_reachability(told.append)
        _newer_release_migrates(store, "ALTER TABLE {s}.kv RENAME TO kv_v2")
        with pytest.raises(errors.FailedPrecondition) as caught, store.read(restartable=True) as txn:
            txn.get(b"o/k")
        assert caught.value.reason == "SCHEMA_NEWER"
        assert told == [False]
        with pytest.raises(errors.FailedPrecondition, match=f"at version {VERSION + 1}"):  # known now: no re-read
            store.transact(lambda txn: txn.put(b"o/k", b"w"))
        assert told == [False]


def test_a_migration_that_only_adds_leaves_calls_working_but_health_reports_it(stigmer_postgres_store_url: str) -> None:
    """The listener reads the version with the revision: the daemon's own commit notifies it."""
    with PostgresStore(stigmer_postgres_store_url, durable=False) as store:
        changed = threading.Event()
        told: list[bool] = []

        def follow(serving: bool) -> None:
            told.append(serving)
            changed.set()

        store.on_reachability(follow)
        _newer_release_migrates(store, "CREATE TABLE {s}.added (id integer PRIMARY KEY)")

        def write(txn: WriteTxn) -> int:
            txn.put(b"o/k", b"v")
            return txn.append_event(b"ev")

        store.transact(write)  # works: nothing it uses changed
        assert changed.wait(30), "the listener did not read the schema's version"
        assert told == [False]
        with store.read() as txn:
            assert txn.get(b"o/k") == b"v"

        # Put back (a newer release's daemons all stopped and the schema restored): serving again.
        changed.clear()
        schema = f'"{store.schema}"'
        with psycopg.connect(store.settings.conninfo, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {schema}.schema_version WHERE version > %s".encode(), (VERSION,))
        store.transact(write)
        assert changed.wait(30), "the listener did not read the schema's version"
        assert told == [False, True]


def test_a_statement_the_engine_got_wrong_on_a_current_schema_is_still_a_bug(stigmer_postgres_store_url: str) -> None:
    """The version is read again and is the known one: no FAILED_PRECONDITION hides a bug."""
    with PostgresStore(stigmer_postgres_store_url, durable=False) as store:

        def wrong(txn: Any) -> None:
            txn._rows_none(b"SELECT no_such_column FROM pg_class", ())

        with pytest.raises(psycopg.errors.UndefinedColumn):
            store.transact(wrong)
        told: list[bool] = []
        store.on_reachability(told.append)
        assert told == []
