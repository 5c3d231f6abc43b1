"""``connect()`` without a data directory finds the one the CLI uses.

``STIGMER_DATA_DIR``, else the config file's ``local.data_dir``, else
``$STIGMER_HOME/data``: a script and ``stigmer local start`` must reach the
same store, never a second one made beside it in ``~/.stigmer/data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.config_file import ENV, HOME_ENV, save_config
from stigmer_core.datadir import DataDirLock
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.auth_support import make_token


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # where the old default would have gone
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def daemon(home: Path) -> Iterator[tuple[Application, str]]:
    """A daemon holding ``$STIGMER_HOME/data``, as ``stigmer local start`` leaves one."""
    directory = home / "data"
    lock = DataDirLock(directory)
    lock.acquire()
    app = Application.open(directory, durable=False)
    server = Server(app, "127.0.0.1:0", max_workers=2)
    server.start()
    lock.record(address=server.address)
    try:
        yield app, server.address
    finally:
        server.stop(grace=1)
        app.close()
        lock.release()


def _agent(name: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    agent.spec.instructions = "Be brief."
    return agent


def test_connect_reaches_the_daemon_of_stigmer_home(daemon: tuple[Application, str], tmp_path: Path) -> None:
    app, address = daemon
    with connect() as client:
        assert not client.in_process and client.target == address
        made: Any = client.stub(agent_grpc.AgentCommandControllerStub).create(_agent("via daemon"), timeout=10)
    stored: Any = KindClient(app.channel(), app.registry.kind("Agent")).get(made.metadata.id)
    assert stored.metadata.name == "via daemon"
    assert not (tmp_path / "user" / ".stigmer").exists(), "no second store made in ~/.stigmer/data"


CANDIDATES = ("configured", "from-env", "given", "home/data", "user/.stigmer")


def _made(tmp_path: Path) -> list[str]:
    """Which of the places a store could be opened in hold one."""
    return [name for name in CANDIDATES if (tmp_path / name).is_dir()]


@pytest.mark.parametrize(
    ("source", "opened"), [("config", "configured"), ("env", "from-env"), ("argument", "given")]
)
def test_the_data_directory_is_resolved_as_the_cli_resolves_it(
    home: Path, tmp_path: Path, source: str, opened: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_config({"local": {"data_dir": str(tmp_path / "configured")}})
    if source in ("env", "argument"):
        monkeypatch.setenv(ENV["data_dir"], str(tmp_path / "from-env"))
    with connect(data_dir=tmp_path / "given" if source == "argument" else None) as client:
        assert client.in_process
        client.stub(agent_grpc.AgentCommandControllerStub).create(_agent("here"), timeout=10)
    assert _made(tmp_path) == [opened]


def test_without_settings_it_is_the_data_directory_of_stigmer_home(home: Path, tmp_path: Path) -> None:
    with connect() as client:
        assert client.in_process
    assert _made(tmp_path) == ["home/data"]


def _role_of_token(client: Any, name: str) -> tuple[grpc.StatusCode, str]:
    """What a create through ``client`` comes to, and who wrote it: a viewer's token may not write."""
    commands = client.stub(agent_grpc.AgentCommandControllerStub)
    try:
        made = commands.create(_agent(name), timeout=10)
    except grpc.RpcError as refused:
        return refused.code(), refused.details() or ""
    return grpc.StatusCode.OK, made.status.audit.spec_audit.created_by.id


def test_a_token_given_to_connect_is_the_caller_in_process_too(home: Path) -> None:
    """``connect(data_dir=…, token=…)`` with no daemon dropped the token: a viewer's token wrote
    as the local administrator. It is now sent on every call, so roles can be tried locally."""
    directory = home / "data"
    with Application.open(directory, durable=False) as app:
        viewer, _ = make_token(app, "local", "viewer", "v")
        editor, _ = make_token(app, "local", "editor", "e")
    with connect(data_dir=directory, token=viewer) as client:
        assert client.in_process and repr(client) == "<stigmer_core.Client local (in process)>"
        code, details = _role_of_token(client, "by the viewer")
        assert code is grpc.StatusCode.PERMISSION_DENIED and "token:local/v (viewer in local)" in details, details
    with connect(data_dir=directory, token=editor) as client:
        assert _role_of_token(client, "by the editor") == (grpc.StatusCode.OK, "token:local/e")
    with connect(data_dir=directory) as client:  # without one: the local administrator, as before
        assert _role_of_token(client, "by the administrator") == (grpc.StatusCode.OK, "local")
