"""A dry run on PostgreSQL takes no revision lock: holding it, a dry-run delete of a large tree
held every org's writes on every daemon for seconds, and a dry run, changing nothing, could be
repeated at will. Here another session holds the lock (as a long write does) while dry runs of
each kind of write run to their answer; the real write waits for the lock, as it must."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import grpc
import psycopg
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from stigmer_core.store.postgres_settings import PostgresSettings

DRY_RUN = [("stigmer-dry-run", "true")]
WAIT = 20.0
"""How long a dry run may take here: far less than a real write waits for the held lock (its
statement_timeout, 30 s); never a measure of speed."""


@pytest.mark.parametrize("path", ["in-process", "sync-server", "asyncio-server"])
def test_dry_runs_answer_while_another_session_holds_the_revision_lock(
    tmp_path: Path, stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # a database's daemon serves on grpc's asyncio server with no read threads, its writes queued
    monkeypatch.setenv("STIGMER_READ_THREADS", "0" if path == "asyncio-server" else "2")
    with contextlib.ExitStack() as stack:
        app = stack.enter_context(
            Application.open(tmp_path / "daemon", store=stigmer_postgres_store_url, durable=False)
        )
        channel = app.channel()
        if path != "in-process":
            server = Server(app, "127.0.0.1:0")
            server.start()
            stack.callback(server.stop, 1)
            assert server.asynchronous is (path == "asyncio-server")
            channel = stack.enter_context(grpc.insecure_channel(server.address))
        agents = KindClient(channel, agent_pb2.Agent, timeout=WAIT)
        made = agents.create(agent_pb2.Agent(metadata={"name": "kept"}, spec={"instructions": "hi"}))
        settings = PostgresSettings.from_url(stigmer_postgres_store_url)
        with psycopg.connect(settings.conninfo, autocommit=True) as holder:
            holder.execute(b"BEGIN")
            holder.execute(f'SELECT revision FROM "{settings.schema}".meta WHERE id = 1 FOR UPDATE'.encode())
            try:
                new = agents.create(
                    agent_pb2.Agent(metadata={"name": "dry"}, spec={"instructions": "x"}), metadata=DRY_RUN
                )
                assert new.metadata.slug == "dry" and new.status.default_instance_id
                changed = agents.get(made.metadata.id)
                changed.spec.instructions = "changed"
                assert agents.update(changed, metadata=DRY_RUN).spec.instructions == "changed"
                deleted = agents.delete(made.metadata.id, metadata=DRY_RUN)
                assert deleted.metadata.id == made.metadata.id
                written: list[object] = []
                real = threading.Thread(target=lambda: written.append(agents.delete(made.metadata.id)), daemon=True)
                real.start()
                real.join(1.0)
                assert real.is_alive() and not written, "a real write waits for the revision lock"
            finally:
                holder.execute(b"ROLLBACK")
            real.join(WAIT)
            assert written, "the real write went through once the lock was let go"
        refused = None
        try:
            agents.get(made.metadata.id)
        except grpc.RpcError as exc:
            refused = exc.code()
        assert refused == grpc.StatusCode.NOT_FOUND
        assert [a.metadata.slug for a in agents.list_all()] == [], "the dry runs stored nothing"
