"""A team server's daemon started before its database answers: it waits (``--store-wait``),
telling why at once, and serves as soon as the database does; past the wait, or told to stop,
it ends cleanly. The database is reached through a forwarder on a port that refuses connections
until the test opens it."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from tests.test_daemon import STIGMER, _free_port, _wait_serving

DEADLINE = 60.0


class Forwarder:
    """Connections to ``port`` carried to ``target``, from when it is made; refused before."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self._server = socket.create_server(("127.0.0.1", port))
        self._target = target
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self._target)
                self._open += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


class Starting:
    """``stigmer serve`` on a store URL, its stderr read as it comes."""

    def __init__(self, tmp_path: Path, store: str, *options: str) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen(
            [STIGMER, "serve", "--address", self.address, "--data-dir", str(tmp_path / "data"),
             "--store", store, *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def next_line(self) -> str:
        return self.lines.get(timeout=DEADLINE)

    def ended(self) -> tuple[int, str]:
        """Its exit code and stdout, once it exited and its stderr was read to the end."""
        code = self.proc.wait(timeout=DEADLINE)
        self._reader.join(DEADLINE)
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


@pytest.fixture
def closed_port() -> int:
    return _free_port()


@contextlib.contextmanager
def _starting(tmp_path: Path, store: str, *options: str) -> Iterator[Starting]:
    daemon = Starting(tmp_path, store, *options)
    try:
        yield daemon
    finally:
        daemon.kill()


def test_a_daemon_started_before_its_database_serves_once_it_answers(
    tmp_path: Path, stigmer_postgres_store_url: str, closed_port: int
) -> None:
    database = urlsplit(stigmer_postgres_store_url)
    store = _through(stigmer_postgres_store_url, closed_port)
    with _starting(tmp_path, store, "--store-wait", str(DEADLINE)) as daemon:
        told = daemon.next_line()
        assert told.startswith(f"stigmer: waiting up to {DEADLINE:g} s for the database (--store-wait): "), told
        assert f"cannot reach the database at {store}: connection failed" in told, told
        assert daemon.proc.poll() is None
        forwarder = Forwarder(closed_port, (database.hostname or "", database.port or 0))
        try:
            _wait_serving(daemon.address, daemon.proc, timeout=DEADLINE)
            with grpc.insecure_channel(daemon.address) as channel:
                made = agent_grpc.AgentCommandControllerStub(channel).create(
                    agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="waited")), timeout=DEADLINE
                )
            assert made.metadata.id.startswith("agt-")
            daemon.proc.send_signal(signal.SIGTERM)
            code, out = daemon.ended()
        finally:
            forwarder.close()
    assert code == 0, daemon.stderr
    assert "listening on" in out and out.rstrip().endswith("stigmer daemon stopped (exit code 0)")


def test_a_database_that_never_answers_ends_the_start_after_the_wait(
    tmp_path: Path, stigmer_postgres_store_url: str, closed_port: int
) -> None:
    store = _through(stigmer_postgres_store_url, closed_port)
    began = time.monotonic()
    with _starting(tmp_path, store, "--store-wait", "1.5") as daemon:
        code, out = daemon.ended()
    waited = time.monotonic() - began
    assert code == 1, (out, daemon.stderr)
    assert daemon.stderr[0].startswith("stigmer: waiting up to 1.5 s for the database (--store-wait): ")
    assert "stigmer: waited 1.5 s for the database (--store-wait): cannot reach" in "".join(daemon.stderr)
    assert waited >= 1.5
    assert "listening" not in out


def test_no_wait_ends_the_start_at_once(tmp_path: Path, stigmer_postgres_store_url: str, closed_port: int) -> None:
    store = _through(stigmer_postgres_store_url, closed_port)
    with _starting(tmp_path, store, "--store-wait", "0") as daemon:
        code, _ = daemon.ended()
    assert code == 1
    assert not any("waiting up to" in line for line in daemon.stderr), daemon.stderr
    assert f"cannot reach the database at {store}" in "".join(daemon.stderr)


def test_a_signal_while_waiting_stops_the_daemon_cleanly(
    tmp_path: Path, stigmer_postgres_store_url: str, closed_port: int
) -> None:
    store = _through(stigmer_postgres_store_url, closed_port)
    with _starting(tmp_path, store, "--store-wait", "600") as daemon:
        assert "waiting up to 600 s" in daemon.next_line()
        daemon.proc.send_signal(signal.SIGTERM)
        code, out = daemon.ended()
    assert code == 0, daemon.stderr
    assert out.strip() == "stigmer daemon stopped (exit code 0)"


def test_a_wait_out_of_range_is_refused(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    for wait in ("-1", "3601", "nan"):
        with _starting(tmp_path, stigmer_postgres_store_url, "--store-wait", wait) as daemon:
            code, _ = daemon.ended()
        assert code == 2, (wait, daemon.stderr)
        assert "--store-wait" in "".join(daemon.stderr)


def test_a_database_that_refuses_the_login_ends_the_start_without_waiting(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A database that does not exist (or a wrong password) was retried for the whole wait, though
    the server had answered and no wait would change its answer."""
    base, _, query = stigmer_postgres_store_url.partition("?")
    store = f"{base.rsplit('/', 1)[0]}/no_such_database_{uuid.uuid4().hex[:8]}?{query}"
    began = time.monotonic()
    with _starting(tmp_path, store, "--store-wait", "60") as daemon:
        code, out = daemon.ended()
    assert code == 1, (out, daemon.stderr)
    assert time.monotonic() - began < 30, "not waited for"
    said = "".join(daemon.stderr)
    assert "waiting up to" not in said and "refused this daemon's login" in said and "does not exist" in said, said
    from stigmer_core import errors
    from stigmer_core.store.postgres_store import PostgresStore

    with pytest.raises(errors.StartupError, match="refused this login"):  # a command (doctor) is no daemon
        PostgresStore(store)
