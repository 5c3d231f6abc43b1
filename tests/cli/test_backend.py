"""``stigmer backend``: the config file decides where every other command goes."""

from __future__ import annotations

import yaml

from .conftest import Stigmer, free_port
from .test_resources import CODER


def test_switch_between_local_and_remote(stigmer: Stigmer, daemon: str) -> None:
    status = stigmer.ok("backend", "status")
    assert "backend:        local" in status and "running (pid" in status and daemon in status

    token = stigmer.ok("token", "create", "--role", "editor").strip()  # through the daemon's socket
    switched = stigmer.ok("backend", "switch", "remote", "--endpoint", daemon, "--token", token)
    assert f"backend: remote ({daemon})" in switched
    config_file = stigmer.home / "config.yaml"
    assert yaml.safe_load(config_file.read_text()) == {
        "backend": {"type": "remote"},
        "remote": {"endpoint": daemon, "token": token},
    }
    assert config_file.stat().st_mode & 0o077 == 0

    remote = stigmer.ok("backend", "status")
    assert f"endpoint:    {daemon}" in remote and "token:       set" in remote and "server:      serving" in remote

    # Through the network and server reflection: kinds, names and writes.
    assert "agent/coder created" in stigmer.ok("apply", "-f", "-", input=CODER)
    assert "coder" in stigmer.ok("get", "ag", "coder")
    assert "stigmer.agentic.agent.v1.AgentQueryController" in stigmer.ok("kinds")

    stigmer.ok("backend", "switch", "local")
    assert yaml.safe_load(config_file.read_text())["backend"] == {"type": "local"}
    assert "coder" in stigmer.ok("get", "agent", "coder")  # same store, reached through the daemon's lock file


def test_flags_and_env_override_the_config(stigmer: Stigmer, daemon: str) -> None:
    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.ok("backend", "switch", "remote", "--endpoint", f"127.0.0.1:{free_port()}")
    unreachable = stigmer.fails("get", "agent")
    assert unreachable.startswith("cannot reach the stigmer server at 127.0.0.1:")
    assert "coder" in stigmer.ok("get", "agent", "--backend", "local")
    assert "coder" in stigmer.ok("get", "agent", "--endpoint", daemon)


def test_switch_refuses_what_cannot_work(stigmer: Stigmer) -> None:
    assert stigmer.fails("backend", "switch", "remote").startswith("the remote backend needs an endpoint")
    assert (
        stigmer.fails("backend", "switch", "remote", "--endpoint", "nohost", code=2)  # a usage error
        == "invalid endpoint 'nohost': use HOST:PORT (a port from 1 to 65535)"
    )
    assert not (stigmer.home / "config.yaml").exists()


def test_status_tells_a_server_that_answers_but_cannot_serve_from_one_that_does_not_answer(stigmer: Stigmer) -> None:
    """A team server whose database does not answer it reports NOT_SERVING; status said "not
    reachable", sending its user after the network instead of the database."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        checks.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        stigmer.ok("backend", "switch", "remote", "--endpoint", f"127.0.0.1:{port}")
        assert "server:      answers, but NOT_SERVING: its store cannot serve" in stigmer.ok("backend", "status")
    finally:
        server.stop(grace=None)
    assert "server:      not reachable" in stigmer.ok("backend", "status")


def test_a_data_directory_on_the_command_line_is_the_local_backend(stigmer: Stigmer) -> None:
    """After `login` (backend remote), `import --data-dir NEW < backup.yaml` and `export --all
    --data-dir DIR` (the documented rescue and restore) went to the team server instead."""
    old = str(stigmer.home / "old")
    stigmer.ok("apply", "-f", "-", "--data-dir", old, input=CODER)
    stigmer.ok("backend", "switch", "remote", "--endpoint", f"127.0.0.1:{free_port()}")  # nothing listens there
    backup = stigmer.ok("export", "--all", "--data-dir", old)
    assert "name: Coder" in backup
    new = str(stigmer.home / "new")
    assert "imported 2 of 2 resources" in stigmer.ok("import", "--data-dir", new, input=backup)
    assert stigmer.ok("export", "--all", "--data-dir", new) == backup
    status = stigmer.ok("backend", "status", "--data-dir", new)
    assert "backend:        local" in status and new in status, status

    both = stigmer.fails("get", "agent", "--data-dir", new, "--backend", "remote", code=2)
    assert both == (
        f"--data-dir {new} names a local store, but --backend remote asks for the remote server; "
        "give one of them (--data-dir alone uses the local backend)"
    )
    assert "coder" in stigmer.ok("get", "agent", "--backend", "local", "--data-dir", new)
    # a server named beside a local store is the same usage error (it exited 1)
    for order in (("--endpoint", "127.0.0.1:1", "--data-dir", new), ("--data-dir", new, "--endpoint", "127.0.0.1:1")):
        said = stigmer.fails("get", "agent", *order, code=2)
        assert said.endswith("but --endpoint 127.0.0.1:1 asks for the remote server; give one of them "
                             "(--data-dir alone uses the local backend)"), said  # fmt: skip
    # $STIGMER_DATA_DIR, often set for every shell, says where the local store is: it picks no backend
    from_env = stigmer("get", "agent", env={"STIGMER_DATA_DIR": new})
    assert from_env.code == 1 and "cannot reach the stigmer server at 127.0.0.1:" in from_env.err, from_env.err


def _said(stigmer: Stigmer, *args: str) -> str:
    result = stigmer(*args)
    return result.out + result.err


def test_the_org_follows_the_backend(stigmer: Stigmer, daemon: str) -> None:
    stigmer.ok("apply", "-f", "-", input=CODER)  # in org 'local'
    token = stigmer.ok("token", "create", "--role", "editor", "--org", "acme").strip()
    stigmer.ok("login", "--endpoint", daemon, "--token", token)
    assert "no agents found in org 'acme'" in _said(stigmer, "get", "agents")
    back = stigmer.ok("backend", "switch", "local")
    assert "org: local" in back.splitlines()
    assert "coder" in stigmer.ok("get", "agents")
    again = stigmer.ok("backend", "switch", "remote")
    assert "org: acme" in again.splitlines()
    assert "no agents found in org 'acme'" in _said(stigmer, "get", "agents")
    team = stigmer("backend", "switch", "local", env={"STIGMER_ORG": "team"})
    assert "org: team (from $STIGMER_ORG)" in team.out.splitlines()
