"""Round trips and statements one Agent create sends to PostgreSQL, counted in process.

Every statement a write sends while it holds the schema's revision lock is a
round trip every other writer of the schema waits for, so this count, not a
rate, is the team server's steadiest figure: it does not move with the
machine's load or its disk. A pipeline (the commit) is one round trip
whatever it holds; a simple-protocol statement of several parts (``BEGIN``
with the lock) is one too. Only the creating thread is counted: the daemon's
listener reads the revision after each commit on a connection of its own,
without the lock.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing import postgres

WARM_UP = 20
COUNTED = 50


@contextlib.contextmanager
def _counting(thread: int) -> Iterator[dict[str, int]]:
    seen = {"round_trips": 0, "statements": 0}
    inside = [0]  # pipelines open on the counted thread
    execute, pipeline = psycopg.Cursor.execute, psycopg.Connection.pipeline

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == thread:
            seen["statements"] += 1
            seen["round_trips"] += 0 if inside[0] else 1
        return execute(self, *args, **kwargs)

    @contextlib.contextmanager
    def counted_pipeline(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        mine = threading.get_ident() == thread
        with pipeline(self, *args, **kwargs) as opened:
            inside[0] += mine
            try:
                yield opened
            finally:
                inside[0] -= mine
                seen["round_trips"] += 1 if mine and not inside[0] else 0

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Connection.pipeline = counted_pipeline  # type: ignore[assignment, method-assign]
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Connection.pipeline = pipeline  # type: ignore[method-assign]


def per_create(base_url: str) -> dict[str, float]:
    """``round_trips`` and ``statements`` per Agent create (with its default instance), on a
    schema of its own, dropped afterwards."""
    url = postgres.with_schema(base_url, f"trips_{uuid.uuid4().hex[:8]}")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data,
            Application.open(data, store=url, durable=False) as app,
        ):
            command = agent_grpc.AgentCommandControllerStub(app.channel())

            def create(i: int) -> None:
                name = f"counted {i}"
                command.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name)))

            for i in range(WARM_UP):  # psycopg prepares a statement on its fifth use
                create(i)
            with _counting(threading.get_ident()) as seen:
                for i in range(WARM_UP, WARM_UP + COUNTED):
                    create(i)
    finally:
        postgres.drop_schema(url)
    return {name: count / COUNTED for name, count in seen.items()}


OWNED = 200
"""Sessions under the agent whose delete is counted."""


def per_cascade_delete(
    base_url: str, owned: int = OWNED, *, limits: Any = None, refused: bool = False
) -> dict[str, float]:
    """``round_trips`` and ``statements`` per object of a cascade delete (an agent, its default
    instance and ``owned`` sessions under it), on a schema of its own, dropped afterwards: the
    revision lock is held for all of them, so every other org's writes wait that long."""
    from stigmer_core.api.agentic.session.v1 import session_pb2
    from stigmer_core.kind_client import KindClient

    url = postgres.with_schema(base_url, f"trips_{uuid.uuid4().hex[:8]}")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data,
            Application.open(data, store=url, durable=False) as app,
        ):
            agents = KindClient(app.channel(), agent_pb2.Agent, timeout=120)
            sessions = KindClient(app.channel(), session_pb2.Session, timeout=120)

            def tree(label: str) -> str:
                agent = agents.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=label)))
                instance = agent.status.default_instance_id
                for i in range(owned):
                    session = session_pb2.Session(spec=session_pb2.SessionSpec(agent_instance_id=instance))
                    session.metadata.name = f"{label} {i}"
                    session.metadata.owner_references.add(kind="AgentInstance", id=instance)
                    sessions.create(session)
                return agent.metadata.id

            warm, counted = tree("warm"), tree("counted")
            agents.delete(warm)  # psycopg prepares a statement on its fifth use
            if limits is not None:
                app.registry.limits = limits
            with _counting(threading.get_ident()) as seen:
                try:
                    agents.delete(counted)
                except grpc.RpcError as error:
                    if not refused or error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                else:
                    if refused:
                        raise AssertionError("the delete was not refused")
    finally:
        postgres.drop_schema(url)
    return {name: count / (1 if refused else owned + 2) for name, count in seen.items()}


def refused_cascade_delete(base_url: str, owned: int = OWNED, limit: int = OWNED // 2) -> dict[str, float]:
    """``round_trips`` and ``statements`` of one delete refused for its tree's size (an agent, its
    default instance and ``owned`` sessions, past a ``max_objects_per_write`` of ``limit``): it
    holds the revision lock as a real delete does, and a refused one is free to repeat."""
    from stigmer_core.limits import Limits

    return per_cascade_delete(base_url, owned, limits=Limits(max_objects_per_write=limit), refused=True)
