"""The real daemon process: health, reflection, SIGTERM, restart, one per data dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import stigmer_core
from stigmer_core import connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

STIGMER = str(Path(sys.executable).with_name("stigmer"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(address: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited early: {proc.communicate()}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError("daemon did not become SERVING")


class Daemon:
    def __init__(self, data_dir: Path, *options: str) -> None:
        self.data_dir = data_dir
        self.address = f"127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen(
            [STIGMER, "serve", "--address", self.address, "--data-dir", str(data_dir), *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        _wait_serving(self.address, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()  # a daemon that ignored SIGTERM must not outlive the test
            raise
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    started = Daemon(tmp_path / "data")
    yield started
    started.kill()


def test_restart_keeps_everything(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        commands = agent_grpc.AgentCommandControllerStub(channel)
        written = [
            commands.create(
                agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=f"persisted {i}")), timeout=10
            )
            for i in range(20)
        ]
    code, out = daemon.stop()
    assert code == 0, out
    assert "draining" in out
    again = Daemon(daemon.data_dir)
    try:
        with grpc.insecure_channel(again.address) as channel:
            query = agent_grpc.AgentQueryControllerStub(channel)
            for agent in written:
                assert query.get(agent_pb2.AgentId(value=agent.metadata.id), timeout=10) == agent
            listed = list(query.list(agent_pb2.ListAgentsRequest(page_size=100), timeout=10).entries)
            assert listed == written  # ids sort by creation time
    finally:
        assert again.stop()[0] == 0


def test_a_hangup_stops_the_daemon_as_sigterm_does(daemon: Daemon) -> None:
    """SIGHUP (its terminal closed, the ssh session that started it ended) was left to the kernel,
    which ended the process at once: no drain, no stop line, its lock and socket left behind."""
    code, out = daemon.stop(signal.SIGHUP)
    assert code == 0, out
    assert "draining" in out and "stopped" in out, out
    assert not (daemon.data_dir / "stigmer.sock").exists()


def test_second_daemon_on_same_dir_exits_with_a_message(daemon: Daemon) -> None:
    second = subprocess.run(
        [STIGMER, "serve", "--address", f"127.0.0.1:{_free_port()}", "--data-dir", str(daemon.data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"another stigmer daemon is using {daemon.data_dir}" in second.stderr
    assert daemon.address in second.stderr


def test_health_and_reflection_list_every_service(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert (
            health.Check(
                health_pb2.HealthCheckRequest(service="stigmer.agentic.agent.v1.AgentQueryController"), timeout=5
            ).status
            == serving
        )
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {
        "stigmer.agentic.agent.v1.AgentCommandController",
        "stigmer.agentic.agent.v1.AgentQueryController",
        "stigmer.agentic.agentinstance.v1.AgentInstanceCommandController",
        "stigmer.agentic.agentinstance.v1.AgentInstanceQueryController",
        "grpc.health.v1.Health",
    } <= names


def test_drain_answers_not_serving_but_serves_until_a_second_signal(tmp_path: Path) -> None:
    """A load balancer needs time to see NOT_SERVING: calls keep working meanwhile, so none is cut."""
    daemon = Daemon(tmp_path / "data", "--drain", "600")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            commands = agent_grpc.AgentCommandControllerStub(channel)
            daemon.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            status = health_pb2.HealthCheckResponse.SERVING
            while status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.05)
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            made = commands.create(
                agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="while draining")), timeout=10
            )
            assert made.metadata.id
            service = "stigmer.agentic.agent.v1.AgentQueryController"
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
        daemon.proc.send_signal(signal.SIGTERM)  # the second: stop now, not after 600 s
        out, _ = daemon.proc.communicate(timeout=30)
        assert daemon.proc.returncode == 0, out
        assert "health NOT_SERVING, still serving for 600 s" in out
    finally:
        daemon.kill()


_TGKILL = {"x86_64": 234, "aarch64": 131}
"""Linux's tgkill system call number, which sends a signal to one thread of a process."""


@pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine not in _TGKILL,
    reason="sends a signal to one thread with Linux's tgkill, numbered here for x86_64 and aarch64",
)
def test_a_sigterm_the_kernel_hands_to_another_thread_still_stops_the_daemon(daemon: Daemon) -> None:
    """A process's signal goes to any thread that does not block it; grpc's threads do not. The
    main thread, in one untimed wait, never ran the handler: the daemon ignored SIGTERM for good."""
    import ctypes

    pid = daemon.proc.pid
    others = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert others, "the daemon runs threads besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL[os.uname().machine], pid, others[0], signal.SIGTERM) == 0, ctypes.get_errno()
    out, _ = daemon.proc.communicate(timeout=30)
    assert daemon.proc.returncode == 0, out
    assert "stopping" in out


def test_a_data_directory_too_deep_for_a_socket_address_still_gets_its_socket(tmp_path: Path) -> None:
    """A socket's address holds 108 bytes: a deeper data directory had no socket, so the owner's
    CLI reached a daemon that requires tokens (or serves TLS) only over its TCP address, as a
    stranger. The socket is now named through a descriptor of its directory."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "data"
    assert len(str(deep / "stigmer.sock")) > 120
    daemon = Daemon(deep, "--require-auth")
    try:
        sock = deep / "stigmer.sock"
        assert sock.is_socket() and stat.S_IMODE(sock.stat().st_mode) == 0o600
        with grpc.insecure_channel(daemon.address) as channel:  # the network path asks for a token
            with pytest.raises(grpc.RpcError) as refused:
                agent_grpc.AgentCommandControllerStub(channel).create(_named_agent("stranger"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with connect(data_dir=deep) as client:  # the owner's path: the local administrator
            assert not client.in_process
            made = client.stub(agent_grpc.AgentCommandControllerStub).create(_named_agent("owner"), timeout=10)
            assert made.metadata.id.startswith("agt-")
        code, out = daemon.stop()
        assert code == 0, out
        assert not sock.exists()
    finally:
        daemon.kill()


def _named_agent(name: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name))


def _metrics_url(daemon: Daemon) -> str:
    assert daemon.proc.stdout is not None
    line = daemon.proc.stdout.readline()  # the start line, printed once the daemon serves
    found = re.search(r"; metrics: (http://127\.0\.0\.1:\d+/metrics)\)$", line.strip())
    assert found, line
    return found.group(1)


def _created_ok(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    wanted = (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="create",'
        'grpc_service="stigmer.agentic.agent.v1.AgentCommandController",grpc_type="unary"} '
    )
    (line,) = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(line.removeprefix(wanted))


@pytest.mark.parametrize("where", ["flag", "config file"])
def test_the_daemon_serves_metrics_where_it_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "flag":
        daemon = Daemon(tmp_path / "data", "--metrics-address", "127.0.0.1:0")
    else:
        home = tmp_path / "home"
        home.mkdir()
        (home / "config.yaml").write_text("server:\n  metrics_address: 127.0.0.1:0\n")
        monkeypatch.setenv("STIGMER_HOME", str(home))
        daemon = Daemon(tmp_path / "data")
    try:
        url = _metrics_url(daemon)
        assert _created_ok(url) == 0
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        release = f"stigmer-core {stigmer_core.__version__}"  # which release each daemon runs
        assert f'stigmer_kind_info{{kind="Agent",release="{release}"}} 1.0' in text.splitlines(), text
        (build,) = [line for line in text.splitlines() if line.startswith("stigmer_build_info{")]
        assert f'version="{stigmer_core.__version__}"' in build and f'grpcio="{grpc.__version__}"' in build, build
        with grpc.insecure_channel(daemon.address) as channel:
            agent_grpc.AgentCommandControllerStub(channel).create(
                agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="counted")), timeout=10
            )
        assert _created_ok(url) == 1
        assert daemon.stop()[0] == 0
        with pytest.raises(OSError):  # its endpoint went with it
            urllib.request.urlopen(url, timeout=5)
    finally:
        daemon.kill()


def test_a_metrics_address_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [STIGMER, "serve", "--address", f"127.0.0.1:{_free_port()}", "--data-dir", str(tmp_path / "data"),
             "--metrics-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert refused.returncode == 1, refused
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in refused.stderr
    assert "listening" not in refused.stdout
