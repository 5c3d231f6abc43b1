"""A throwaway PostgreSQL server for tests, and a fresh schema per test.

Tests use the server binaries of the operating system's package (Debian's
``postgresql``: ``/usr/lib/postgresql/<version>/bin``), started once per test
session on 127.0.0.1 on a free port in a temporary directory with fsync off,
and stopped at the end. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` user that package creates.
``STIGMER_TEST_POSTGRES_URL`` points the tests at an existing server instead
(each test still gets a schema of its own, dropped afterwards).

With no binaries and no URL, PostgreSQL tests skip, except under CI
(``CI=true``), where they fail: CI installs the package (see ``.ci/run``), so
a missing server there is a broken setup, not a reason to test less.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg

from stigmer_core.store.postgres_store import PostgresSettings

URL_ENV = "STIGMER_TEST_POSTGRES_URL"
ENGINES_ENV = "STIGMER_TEST_ENGINES"
ENGINES = ("lmdb", "postgresql")


def selected_engines() -> tuple[str, ...]:
    """The engines engine-parametrised tests run on: ``STIGMER_TEST_ENGINES`` (comma-separated), else both.

    The protobuf-7 pass of ``make test`` sets ``lmdb``: the engines see bytes
    only, so the protobuf runtime cannot tell them apart, and the pass stays short.
    """
    chosen = tuple(e.strip() for e in os.environ.get(ENGINES_ENV, "").split(",") if e.strip())
    unknown = set(chosen) - set(ENGINES)
    if unknown:
        raise ValueError(f"{ENGINES_ENV}: unknown engine(s) {sorted(unknown)}; use {', '.join(ENGINES)}")
    return chosen or ENGINES


class PostgresUnavailable(Exception):
    """No server can be had; the message says why and what installs one."""


def find_binaries() -> Path | None:
    """The newest ``bin`` directory holding ``initdb`` and ``pg_ctl``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestServer:
    """One PostgreSQL server in its own temporary directory."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, binaries: Path, *, durable: bool = False) -> None:
        self.binaries = binaries
        self.durable = durable
        self.directory = Path(tempfile.mkdtemp(prefix="stigmer-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "--no-sync", "--auth=trust", "--username=postgres", "-E", "UTF8", "-D", str(self.data))
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self.binaries / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.directory)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.directory}"
            " -c max_connections=300"
        )
        if not self.durable:  # tests: nothing here must survive a machine crash
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options, "start")

    def stop(self) -> None:
        """Stop now (``pg_ctl stop -m fast``): clients see their connections end."""
        self._run("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(PostgresUnavailable):  # already stopped
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_lock = threading.Lock()
_shared: TestServer | None = None
_shared_error: str | None = None


def start_server(*, durable: bool = False) -> TestServer:
    """A new server of its own (for a test that stops and restarts it, or a benchmark
    that wants fsync on: ``durable``); the caller destroys it."""
    binaries = find_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found: install Debian's `postgresql` package "
            f"(`apt-get install postgresql`) or set {URL_ENV}"
        )
    return TestServer(binaries, durable=durable)


def shared_url() -> str:
    """The session's server: ``STIGMER_TEST_POSTGRES_URL``, or one started on first use."""
    global _shared, _shared_error
    configured = os.environ.get(URL_ENV)
    if configured:
        return configured
    with _lock:
        if _shared is None:
            if _shared_error is not None:
                raise PostgresUnavailable(_shared_error)
            try:
                _shared = start_server()
            except PostgresUnavailable as exc:
                _shared_error = str(exc)
                raise
            atexit.register(stop_shared)
        return _shared.url


def stop_shared() -> None:
    global _shared
    with _lock:
        if _shared is not None:
            _shared.destroy()
            _shared = None


def required() -> bool:
    """Whether a missing server fails the test run rather than skipping its PostgreSQL half."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def fresh_schema_url(base_url: str | None = None) -> str:
    """A store URL naming a schema no other test uses (the store creates it on open)."""
    return with_schema(base_url or shared_url(), f"t_{uuid.uuid4().hex[:20]}")


def drop_schema(url: str) -> None:
    settings = PostgresSettings.from_url(url)
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{settings.schema}" CASCADE'.encode())
