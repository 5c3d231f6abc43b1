"""Secret values never leave the server in clear, except through one door.

A whole run (environment, agent, session, execution with secret runtime
values, runner reports, cancel, failures, deletes) is driven on both paths;
every response, every streamed state, every error message, every log line,
the raw store (objects and event log), on LMDB the bytes of ``data.mdb`` (also
tried with ``secret.key``), and a ``stigmer export --all`` are scanned for the clear
values, on LMDB and on PostgreSQL. The one place they may appear is
ExecutionContext ``get`` while the execution runs, and the test checks that
they do appear there, so the scan can fail.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from stigmer_core import Application
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.server import Server
from stigmer_plugins.secrets import box
from tests.agent_execution_support import COMPLETED, IN_PROGRESS, Kinds
from tests.secret_scan import opened

ENV_SECRET = "env-secret-0c41d7e2"
RUNTIME_SECRET = "runtime-secret-9ab3f550"
SECRETS = (ENV_SECRET, RUNTIME_SECRET)


class Served:
    """An application on one path, which the test shuts down itself to export its store."""

    def __init__(self, data_dir: Path, path: str, store: str | None) -> None:
        self.data_dir = data_dir
        self.store = store
        self.app = Application.open(data_dir, durable=False, store=store)
        self.server: Server | None = None
        if path == "in-process":
            self.channel: grpc.Channel = self.app.channel()
        else:
            self.server = Server(self.app, "127.0.0.1:0", max_workers=4)
            self.server.start()
            self.channel = grpc.insecure_channel(self.server.address)
        self.closed = False

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.close()
        if self.server is not None:
            self.server.stop(grace=0)
        self.app.close()


@pytest.fixture(params=["in-process", "network"])
def served(request: pytest.FixtureRequest, tmp_path: Path, stigmer_store: str | None) -> Iterator[Served]:
    served = Served(tmp_path / "data", request.param, stigmer_store)
    yield served
    served.shutdown()


class Recorder:
    """Everything the server sent back: messages and error details."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, call: Callable[[], Any]) -> Any:
        try:
            got = call()
        except grpc.RpcError as exc:
            self.seen.append(f"{exc.code()}: {exc.details()}")
            return None
        items = got if isinstance(got, list) else [got]
        for item in items:
            if isinstance(item, Message):
                self.seen.append(text_format.MessageToString(item))
                self.seen.append(item.SerializeToString().decode("latin-1"))
        return got

    def leaks(self) -> list[str]:
        return [s for s in SECRETS for text in self.seen if s in text]


def _raw_store(app: Application) -> bytes:
    with app.store.read() as txn:
        return b"\n".join(key + b"=" + value for key, value in txn.scan(b""))


def test_secrets_appear_nowhere_but_a_live_context_get(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    app, channel = served.app, served.channel
    caplog.set_level(logging.DEBUG)
    kinds = Kinds.on(app, channel)
    seen = Recorder()
    env = seen(lambda: kinds.environment("prod", {"DB": (ENV_SECRET, True), "REGION": ("eu", False)}))
    agent = seen(lambda: kinds.agent(env_slugs=["prod"]))
    runtime = {"TOKEN": (RUNTIME_SECRET, True), "MODE": ("fast", False)}
    execution = seen(lambda: kinds.execution(agent_id=agent.metadata.id, runtime_env=runtime, tags=["t"]))
    execution_id, context_id = execution.metadata.id, execution.status.execution_context_id
    stream = kinds.executions.call("subscribe", ae.SubscribeAgentExecutionInput(execution_id=execution_id), timeout=30)

    # the one door: get of the context while the execution runs
    live = kinds.contexts.get(context_id)
    assert live.spec.data["DB"].value == ENV_SECRET and live.spec.data["TOKEN"].value == RUNTIME_SECRET

    seen(lambda: kinds.executions.get(execution_id))
    seen(lambda: kinds.executions.list_page(org="local").entries)
    seen(lambda: kinds.executions.call("list", ae.ListAgentExecutionsRequest(tags=["t"])).entries)
    seen(
        lambda: (
            kinds.executions.call(
                "listBySession", ae.ListAgentExecutionsBySessionRequest(session_id=execution.spec.session_id)
            ).entries
        )
    )
    seen(lambda: kinds.executions.get_by_reference(slug=execution.metadata.slug))
    seen(lambda: kinds.contexts.list_page().entries)
    seen(lambda: kinds.contexts.get_by_reference(slug=execution_id))
    seen(lambda: kinds.environments.get(env.metadata.id))
    seen(lambda: kinds.environments.list_page().entries)
    seen(lambda: kinds.sessions.call("list", session_pb2.ListSessionsRequest()).entries)
    relabelled = ae.AgentExecution()
    relabelled.CopyFrom(execution)
    relabelled.metadata.labels["team"] = "a"
    updated = seen(lambda: kinds.executions.update(relabelled))
    resent = ae.AgentExecution()
    resent.CopyFrom(updated)
    resent.spec.runtime_env["TOKEN"].value = RUNTIME_SECRET  # the clear value sent again is not echoed
    assert seen(lambda: kinds.executions.apply(resent)) == updated
    # refusals that carry the secret in their request
    seen(lambda: kinds.execution(agent_id=agent.metadata.id, runtime_env={"bad key": (RUNTIME_SECRET, True)}))
    seen(lambda: kinds.execution("lost", session_id="ses-01arz3ndektsv4rrffq69g5fav", runtime_env=runtime))
    seen(lambda: kinds.executions.update(_changed(resent)))
    seen(lambda: kinds.contexts.delete(context_id))
    seen(lambda: kinds.report(execution_id, IN_PROGRESS, "working"))
    seen(lambda: kinds.report(execution_id, COMPLETED, "done"))
    seen(lambda: kinds.report(execution_id, IN_PROGRESS, "too late"))
    seen(lambda: list(stream))
    ended = seen(lambda: kinds.contexts.get(context_id))
    assert ended.spec.data["TOKEN"].value != RUNTIME_SECRET, "no clear secret once the run ended"
    second = seen(lambda: kinds.execution("second", session_id=execution.spec.session_id, runtime_env=runtime))
    seen(lambda: kinds.cancel(second.metadata.id, "stop"))
    seen(lambda: kinds.contexts.delete(second.status.execution_context_id))
    seen(lambda: kinds.executions.delete(second.metadata.id))

    assert seen.leaks() == []
    refusals = [s.split(":")[0] for s in seen.seen if s.startswith("StatusCode.")]
    assert refusals == [
        "StatusCode.INVALID_ARGUMENT",
        "StatusCode.NOT_FOUND",
        "StatusCode.INVALID_ARGUMENT",
        "StatusCode.FAILED_PRECONDITION",
        "StatusCode.FAILED_PRECONDITION",
    ], "every refusal was recorded and scanned"
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert [s for s in SECRETS if s in logged] == []
    raw = _raw_store(app)
    assert [s for s in SECRETS if s.encode() in raw] == [], "encrypted at rest, in objects and in the event log"

    served.shutdown()
    if served.store is None:  # LMDB only: data.mdb's own bytes (PostgreSQL's rows are the raw store scanned above)
        on_disk = (served.data_dir / "data.mdb").read_bytes()
        assert [s for s in SECRETS if s.encode() in on_disk] == [], "not in clear in any page, freed ones included"
        contexts = [f"{c}/{k}" for c in (context_id, second.status.execution_context_id) for k in ("DB", "TOKEN")]
        assert opened(on_disk, [box(app.registry)], contexts) == {}, "the runs' copies do not open with secret.key"
    exported = _export(served.data_dir, served.store)
    assert "kind: Environment" in exported and "DB:" in exported and "<redacted>" in exported
    assert "AgentExecution" not in exported and "ExecutionContext" not in exported, "run-time records are not exported"
    assert [s for s in SECRETS if s in exported] == []


def _changed(execution: ae.AgentExecution) -> ae.AgentExecution:
    changed = ae.AgentExecution()
    changed.CopyFrom(execution)
    changed.spec.message = "a different message"
    return changed


def _export(data_dir: Path, store: str | None = None) -> str:
    """`stigmer export --all` of the daemon's data; on ``store`` (a PostgreSQL URL) when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIGMER_")}
    env["STIGMER_HOME"] = str(data_dir.parent / "home")
    if store is not None:
        env["STIGMER_STORE"] = store
    done = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli", "--verbose", "export", "--all", "-A", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr
