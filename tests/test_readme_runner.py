"""The README's runner, its own code run as a user would: against a server that requires tokens,
restarted under the same name, and given a run no write can claim."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from tests.agent_execution_support import CANCELLED, IN_PROGRESS, Kinds
from tests.auth_support import ALPHA, make_token, requiring_tokens, served, with_token


def _runner(name: str = "") -> dict[str, Any]:
    """A fresh process running the README's runner code (named ``name``: a restart of one)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def pending(" in s]
    runner: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), runner)
    if name:
        runner["RUNNER"] = name
    return runner


def _messages(kinds: Kinds, execution_id: str) -> list[str]:
    return [m.content for m in kinds.executions.get(execution_id).status.messages]


def test_the_readme_runner_sends_its_token_and_a_restart_under_its_name_resumes_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stigmer_store: str | None
) -> None:
    """The runner dialled an insecure channel without a token, so a server requiring tokens refused
    every call; and restarted in a container (the same hostname, pid 1, token), it numbered its
    reports from 1 again: its report "1" was answered OK and not applied, taken for the dead
    process's report "1" sent again."""
    with requiring_tokens(tmp_path, stigmer_store) as app, served(app) as server:
        editor, _ = make_token(app, ALPHA, "editor")
        runner_token, _ = make_token(app, ALPHA, "runner")
        kinds = Kinds.on(app, with_token(grpc.insecure_channel(server.address), editor))
        agent = kinds.agent(org=ALPHA)
        run = kinds.execution(agent_id=agent.metadata.id, org=ALPHA)
        monkeypatch.setenv("STIGMER_ENDPOINT", server.address)
        monkeypatch.delenv("STIGMER_TOKEN", raising=False)
        first = _runner("host-abc:1")
        with pytest.raises(grpc.RpcError) as err:
            next(first["pending"](first["open_channel"]()))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # no token: the server says so
        monkeypatch.setenv("STIGMER_TOKEN", runner_token)
        channel = first["open_channel"]()
        work = first["pending"](channel)
        assert next(work) == (run.metadata.id, run.metadata.resource_version)
        work.close()
        assert first["claim"](channel, run.metadata.id, run.metadata.resource_version)
        assert first["report"](channel, run.metadata.id, messages=[{"content": "old step 1"}])
        # the process dies; its container starts it again: the same name, the same token
        again = _runner("host-abc:1")
        channel = again["open_channel"]()
        assert list(again["silent"](channel)) == [
            (run.metadata.id, kinds.executions.get(run.metadata.id).metadata.resource_version)
        ]
        assert again["claim"](channel, *next(again["silent"](channel)))
        assert again["report"](channel, run.metadata.id, messages=[{"content": "new step 1"}])
        assert _messages(kinds, run.metadata.id) == ["old step 1", "new step 1"]
        # a run another runner holds and reports on is not silent, to this runner
        other = kinds.execution(agent_id=agent.metadata.id, name="other", org=ALPHA)
        elsewhere = _runner("host-xyz:1")
        assert elsewhere["claim"](elsewhere["open_channel"](), other.metadata.id, other.metadata.resource_version)
        assert [i for i, _ in again["silent"](channel)] == [run.metadata.id]
        # ended by an editor: the runner is told to stop running it, not failed
        kinds.cancel(run.metadata.id)
        assert kinds.executions.get(run.metadata.id).status.phase == CANCELLED
        assert not again["report"](channel, run.metadata.id, messages=[{"content": "too late"}])


def test_the_readme_runner_skips_a_run_it_cannot_claim_and_goes_on(
    stigmer_app: Application, stigmer_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """A claim refused RESOURCE_EXHAUSTED (a run too large to take another write) was raised, which
    killed the runner, at every restart, as the run stayed PENDING at the head of its backlog."""
    runner = _runner("host-abc:1")
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agent = kinds.agent()
    large = kinds.execution(agent_id=agent.metadata.id, name="large", message="m" * 20_000)
    small = kinds.execution(agent_id=agent.metadata.id, name="small")
    limits = stigmer_app.registry.limits
    stigmer_app.registry.limits = attrs.evolve(limits, max_object_bytes=large.ByteSize() + 4)
    try:
        with caplog.at_level(logging.WARNING, logger="runner"):
            assert not runner["claim"](stigmer_channel, large.metadata.id, large.metadata.resource_version)
        assert "not running " + large.metadata.id in caplog.text and "RESOURCE_EXHAUSTED" in caplog.text
        assert runner["claim"](stigmer_channel, small.metadata.id, small.metadata.resource_version)
    finally:
        stigmer_app.registry.limits = limits
    assert kinds.executions.get(large.metadata.id).status.phase != IN_PROGRESS
    held = kinds.executions.get(small.metadata.id)
    assert (held.status.phase, held.status.runner) == (IN_PROGRESS, "host-abc:1")
    assert isinstance(held, ae.AgentExecution)


class _Daemon:
    """A daemon on one address, started again on it over the same store or another one."""

    def __init__(self, data: Path) -> None:
        from stigmer_core.server import Server

        self._server_cls = Server
        self.app = Application.open(data, durable=False)
        self.server = Server(self.app, "127.0.0.1:0", max_workers=4)
        self.server.start()
        self.address = self.server.address

    def restart(self, data: Path) -> Kinds:
        """Stopped, then serving ``data`` on the same address (an upgrade, or a restore)."""
        self.close()
        self.app = Application.open(data, durable=False)
        self.server = self._server_cls(self.app, self.address, max_workers=4)
        self.server.start()
        return Kinds.on(self.app, self.app.channel())

    def close(self) -> None:
        self.server.stop(grace=1)
        self.app.close()


@contextlib.contextmanager
def _watching_runner(data: Path) -> Iterator[tuple[_Daemon, Kinds, Iterator[tuple[str, int]]]]:
    """A daemon on ``data``, the kinds' clients in its process, and the README runner's ``pending``
    over the network, whose watch opens at its first ``next``; all closed after."""
    daemon = _Daemon(data)
    channel = grpc.insecure_channel(daemon.address)
    work = _runner("host-abc:1")["pending"](channel)
    try:
        yield daemon, Kinds.on(daemon.app, daemon.app.channel()), work
    finally:
        work.close()
        channel.close()
        daemon.close()


def test_the_readme_runner_watches_on_across_a_daemon_restart(tmp_path: Path) -> None:
    """The runner's watch had no error handling: a daemon restarted (an upgrade) cut it with
    UNAVAILABLE and the runner died with a traceback; it now opens the watch again after the last
    event it received, and a run made while the daemon was away is yielded once it is back."""
    with _watching_runner(tmp_path / "data") as (daemon, kinds, work):
        agent_id = kinds.agent().metadata.id
        before = kinds.execution(agent_id=agent_id, name="before")
        assert next(work) == (before.metadata.id, before.metadata.resource_version)  # the backlog
        during = kinds.execution(agent_id=agent_id, name="during")
        assert next(work) == (during.metadata.id, during.metadata.resource_version)  # the watch
        kinds = daemon.restart(tmp_path / "data")  # the daemon again, same address
        after = kinds.execution(agent_id=agent_id, name="after")
        assert next(work) == (after.metadata.id, after.metadata.resource_version)


def test_the_readme_runner_starts_over_on_a_store_restored_behind_it(tmp_path: Path) -> None:
    """A store restored from a backup has revisions behind the runner's: its resume was refused
    INVALID_ARGUMENT, which the runner took for a bug of its own and died on. The refusal names
    REVISION_AHEAD, and the runner starts over from now, listing the restored store's backlog."""
    with _watching_runner(tmp_path / "before") as (daemon, kinds, work):
        agent_id = kinds.agent().metadata.id
        for n in range(4):  # the runner's revision goes past what the restored store will hold
            made = kinds.execution(agent_id=agent_id, name=f"during {n}")
            assert next(work) == (made.metadata.id, made.metadata.resource_version)
        kinds = daemon.restart(tmp_path / "restored")  # another store, same address
        restored = kinds.execution(agent_id=kinds.agent().metadata.id, name="restored")
        with daemon.app.store.read() as txn:
            assert txn.revision < made.metadata.resource_version
        assert next(work) == (restored.metadata.id, restored.metadata.resource_version)  # its backlog
        later = kinds.execution(agent_id=restored.spec.agent_id, name="later")
        assert next(work) == (later.metadata.id, later.metadata.resource_version)  # and watched on
