"""A call on a client after ``close()`` raises grpc's ValueError for a closed channel, whatever the
client: through a token, a call crashed the process (grpc's intercepted channel over a closed one),
and in process it failed INTERNAL with LMDB's words for a closed environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stigmer_core import Application, connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.channel import CLOSED
from stigmer_core.server import Server
from tests.auth_support import ALPHA, make_token


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A daemon requiring tokens (its address) and an admin token of it."""
    with Application.open(tmp_path / "data", durable=False, require_auth=True) as app:
        token, _ = make_token(app, ALPHA, "admin", "operator")
        server = Server(app, "127.0.0.1:0", max_workers=2)
        server.start()
        try:
            yield server.address, token
        finally:
            server.stop(grace=1)


def test_a_stub_of_a_closed_client_with_a_token_raises_and_the_process_lives(served: tuple[str, str]) -> None:
    address, token = served
    script = textwrap.dedent(
        f"""
        from stigmer_core import connect
        from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc
        client = connect({address!r}, token={token!r})
        stub = client.stub(service_pb2_grpc.AgentQueryControllerStub)
        assert stub.list(agent_pb2.ListAgentsRequest()).entries is not None
        client.close()
        for call in (stub.list, stub.get):
            try:
                call(agent_pb2.ListAgentsRequest() if call is stub.list else agent_pb2.AgentId(value="agt-x"))
            except ValueError as exc:
                print("refused:", exc)
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, (ran.returncode, ran.stderr[-2000:])  # -11 without the change
    assert ran.stdout.splitlines() == [f"refused: {CLOSED}"] * 2, ran.stdout


def test_an_in_process_client_after_close_says_closed_not_internal(tmp_path: Path) -> None:
    client = connect(data_dir=tmp_path / "data")
    stub = client.stub(service_pb2_grpc.AgentQueryControllerStub)
    watch = client.stub(watch_pb2_grpc.WatchStub)
    assert list(stub.list(agent_pb2.ListAgentsRequest()).entries) == []
    client.close()
    with pytest.raises(ValueError, match=CLOSED.replace("!", "")):
        stub.list(agent_pb2.ListAgentsRequest())
    with pytest.raises(ValueError, match=CLOSED.replace("!", "")):
        watch.Watch(watch_pb2.WatchRequest(kind="Agent"))  # a stream is refused as it is opened


def test_an_applications_channels_close_with_it(tmp_path: Path) -> None:
    """A channel taken from an application outlives nothing of it: closed with it, its calls are
    refused as a closed channel's, and one closed alone leaves the others serving."""
    app = Application.open(tmp_path / "data", durable=False)
    first, second = app.channel(), app.channel()
    first.close()
    with pytest.raises(ValueError):
        service_pb2_grpc.AgentQueryControllerStub(first).list(agent_pb2.ListAgentsRequest())
    queries = service_pb2_grpc.AgentQueryControllerStub(second)
    assert list(queries.list(agent_pb2.ListAgentsRequest()).entries) == []
    app.close()
    with pytest.raises(ValueError):
        queries.list(agent_pb2.ListAgentsRequest())
