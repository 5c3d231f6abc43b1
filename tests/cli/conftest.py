"""Run the real ``stigmer`` command in subprocesses, isolated from the real home.

Every test gets its own ``STIGMER_HOME`` (so config, data directory, pid and
log files live under ``tmp_path``) and every daemon started is stopped by a
finalizer, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest
import yaml

from stigmer_core.cli.daemon import Files, hung_in_stop
from stigmer_core.datadir import holder

TIMEOUT = 30
_ISOLATED = (
    "STIGMER_BACKEND",
    "STIGMER_DATA_DIR",
    "STIGMER_STORE",
    "STIGMER_ADDRESS",
    "STIGMER_ENDPOINT",
    "STIGMER_TOKEN",
    "STIGMER_CA_FILE",
    "STIGMER_CERT_FILE",
    "STIGMER_KEY_FILE",
    "STIGMER_ORG",
    "STIGMER_SECRET_KEY",
    "STIGMER_SECRET_KEY_FILE",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


@attrs.frozen
class Started:
    address: str
    output: str


@attrs.define
class Stigmer:
    """The ``stigmer`` command of this venv, with one STIGMER_HOME."""

    home: Path
    started: list[Path] = attrs.field(factory=list)
    python_path: list[Path] = attrs.field(factory=list)
    store: str | None = None
    """A team server's PostgreSQL URL, given as STIGMER_STORE to every command (the daemon and the
    commands opening the store in-process alike); None: LMDB in the data directory."""

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _ISOLATED}
        env["STIGMER_HOME"] = str(self.home)
        if self.store:
            env["STIGMER_STORE"] = self.store
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join([*map(str, self.python_path), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            )
        env.pop("NO_COLOR", None)
        return env

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = TIMEOUT, env: dict[str, str] | None = None
    ) -> Result:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "stigmer_core.cli", *args],
                input=input,
                capture_output=True,
                text=True,
                env={**self.env(), **(env or {})},
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"stigmer {' '.join(args)} ran past {timeout:g}s{self.logs()}") from exc
        return Result(done.returncode, done.stdout, done.stderr)

    def logs(self, lines: int = 400) -> str:
        """The end of the log of every daemon this test started: where a command that hung was stuck
        (a stop cut short at its limit writes there the stack of each thread still running)."""
        shown = []
        for data_dir in self.started:
            log = Files(data_dir).log_file
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                shown.append(f"\n--- {log} ---\n{tail}")
        return "".join(shown)

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self(*args, input=input)
        assert result.code == 0, f"stigmer {' '.join(args)} failed ({result.code}):\n{result.err}\n{result.out}"
        return result.out

    def fails(self, *args: str, input: str | None = None, code: int = 1) -> str:
        """The one-line error of a failing command."""
        result = self(*args, input=input)
        assert result.code == code, f"stigmer {' '.join(args)}: exit {result.code}, wanted {code}\n{result.err}"
        lines = result.err.strip().splitlines()
        assert lines and lines[-1].startswith("stigmer: "), result.err
        return lines[-1].removeprefix("stigmer: ")

    def start(self, *, data_dir: Path | None = None) -> Started:
        """Start a daemon on a free loopback port (on ``store`` when one is set)."""
        data_dir = data_dir or self.data_dir
        self.started.append(data_dir)
        address = f"127.0.0.1:{free_port()}"
        out = self.ok("local", "start", "--address", address, "--data-dir", str(data_dir))
        assert f"listening on {address}" in out, out
        return Started(address, out)

    def cleanup(self) -> None:
        """Stop whatever daemon a test left running: politely, then by force."""
        for data_dir in self.started:
            info = holder(data_dir)
            if not info or "pid" not in info:
                continue
            pid = int(info["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 25  # past the daemon's stop limit (20 s): a hung stop prints its stacks
            while holder(data_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if holder(data_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if any(hung_in_stop(Files(data_dir).log_file) for data_dir in self.started):  # ended by stop_bound
            warnings.warn(f"a daemon's stop hung past its limit:{self.logs()}", stacklevel=1)


@pytest.fixture
def stigmer(tmp_path: Path) -> Iterator[Stigmer]:
    cli = Stigmer(tmp_path / "home")
    try:
        yield cli
    finally:
        cli.cleanup()


@pytest.fixture
def daemon(stigmer: Stigmer) -> str:
    """A running daemon on the default data directory of ``stigmer``'s home; its address."""
    return stigmer.start().address


def stored_nothing(stigmer: Stigmer, *args: str) -> bool:
    """Whether the store the command's flags name holds no object: none made yet (a command that
    works on stored objects is refused there, and makes none), or an export of it holds nothing."""
    result = stigmer("export", "--all", *args)
    if result.code == 1 and "holds no store, so `stigmer export` has nothing to work on" in result.err:
        return True
    assert result.code == 0, result.err
    return list(yaml.safe_load_all(result.out)) == []


def write(path: Path, *documents: str) -> Path:
    path.write_text("---\n".join(documents))
    return path


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()]
