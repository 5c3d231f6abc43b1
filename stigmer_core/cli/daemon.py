"""The background daemon: start it detached, find it, stop it.

The data directory's lock file (``stigmer_core.datadir``) is the truth about
whether a daemon runs and where it listens: the lock dies with the process.
The pid file beside the data directory (named after it: two data
directories of one parent keep their own pid file and log) only remembers
what ``local start`` spawned, so a pid file without a lock holder is stale and is removed. Readiness
is the gRPC health service saying SERVING, not the port accepting connections.
The pid and log files are 0600 and a data directory made here 0700, whatever
the umask: the log may name what the daemon holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core.cli.errors import CliError
from stigmer_core.client import network_channel
from stigmer_core.datadir import holder, open_private, private_dir

PID_NAME = "daemon.pid"
LOG_NAME = "daemon.log"
START_MARK = "--- "
"""How the line ``local start`` writes to the log before each daemon it spawns begins."""
POLL = 0.05


@attrs.frozen
class Files:
    """Where one data directory's daemon keeps its pid and log: the directory's parent.

    The default data directory (``~/.stigmer/data``, any directory named ``data``)
    keeps ``daemon.pid`` and ``daemon.log``; any other ``NAME`` has ``NAME.daemon.pid``
    and ``NAME.daemon.log``, so siblings (``/tmp/d1``, ``/tmp/d2``) never share them.
    """

    data_dir: Path

    @property
    def _stem(self) -> str:
        name = self.data_dir.name
        return "daemon" if name in ("", "data") else f"{name}.daemon"

    @property
    def pid_file(self) -> Path:
        return self.data_dir.parent / f"{self._stem}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self._stem}.log"

    @property
    def layouts(self) -> list[tuple[Path, Path]]:
        """(pid file, log file) where a daemon of this directory may have been started from:
        its own, then the shared ``daemon.pid`` earlier releases gave every directory."""
        shared = (self.data_dir.parent / PID_NAME, self.data_dir.parent / LOG_NAME)
        own = (self.pid_file, self.log_file)
        return [own] if own == shared else [own, shared]


@attrs.frozen
class Running:
    pid: int
    address: str
    tls: bool = False


def running(data_dir: Path) -> Running | None:
    """The daemon holding ``data_dir``, if any (its address is empty while it starts)."""
    info = holder(data_dir)
    if info is None or "pid" not in info:
        return None
    return Running(pid=int(info["pid"]), address=str(info.get("address") or ""), tls=bool(info.get("tls")))


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie waiting to be reaped is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def clean_stale_pid_file(files: Files) -> int | None:
    """Remove a pid file whose process is gone; return the pid it named.

    A live pid that does not hold this data directory may be a sibling data
    directory's daemon (they share the parent), so its file is left alone.
    """
    try:
        text = files.pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    pid = int(text) if text.isdigit() else -1
    if running(files.data_dir) is not None or (pid > 0 and alive(pid)):
        return None
    files.pid_file.unlink(missing_ok=True)
    return pid


def serving(address: str, timeout: float = 1.0, *, ca_file: str | None = None) -> bool:
    """Whether the server at ``address`` answers its health check (over TLS where ``connect`` would use it)."""
    return health(address, timeout, ca_file=ca_file) == "SERVING"


def health(
    address: str,
    timeout: float = 1.0,
    *,
    ca_file: str | None = None,
    why: list[str] | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> str | None:
    """The server's overall health (``SERVING``, or ``NOT_SERVING`` while a team server's database
    does not answer it or its schema is newer than it knows), or None when nothing answers (grpc's reason appended to ``why``)."""
    with network_channel(address, ca_file=ca_file, cert_file=cert_file, key_file=key_file) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            if why is not None:
                why.append(str(exc.details() if isinstance(exc, grpc.Call) else exc) or "")
            return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _log_tail(files: Files, lines: int = 5) -> list[str]:
    try:
        return files.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _last_error(files: Files) -> str:
    """The error line the daemon this start spawned printed last (``stigmer: ...``), "" if none:
    what stopped it, told where the user looks instead of only in its log."""
    said = ""
    for line in _log_tail(files, 200):
        if line.startswith(START_MARK):  # an earlier start's lines are not this one's
            said = ""
        elif line.startswith("stigmer: "):
            said = line.removeprefix("stigmer: ")
    return said


def _names(pid_file: Path, pid: int) -> bool:
    try:
        return pid_file.read_text().strip() == str(pid)
    except OSError:
        return False


def _forget(files: Files, pid: int) -> None:
    """Remove the pid file that is ``pid``'s (a shared one of an earlier release may be another's)."""
    for pid_file, _ in files.layouts:
        if _names(pid_file, pid):
            pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def starting(files: Files) -> Iterator[None]:
    """Hold off every other ``local start`` of this data directory while this one looks for a
    daemon, starts one and waits for it: started together, each found none, each wrote its own
    pid in the pid file, and each loser, its daemon refused by the running one, removed the file
    if it named its own, so the daemon that ran had none (``local status`` then took it for one
    started by ``stigmer serve``). The lock is on the log file, opened apart from the descriptor
    the daemon writes to, so the daemon never holds it."""
    private_dir(files.data_dir)
    with os.fdopen(open_private(files.log_file), "ab") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def spawn(files: Files, address: str) -> subprocess.Popen[bytes]:
    """``stigmer serve`` in a new session, detached from this terminal, logging to the log file."""
    private_dir(files.data_dir)
    command = [
        sys.executable,
        "-m",
        "stigmer_core.cli",
        "serve",
        "--address",
        address,
        "--data-dir",
        str(files.data_dir),
        "--drain",  # one person's daemon has no load balancer to wait for: `local stop` stops it now
        "0",
    ]
    with os.fdopen(open_private(files.log_file), "ab") as log:
        log.write(f"{START_MARK}{time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    with os.fdopen(open_private(files.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as pid_file:
        pid_file.write(f"{process.pid}\n")
    return process


def _ready(daemon: Running, data_dir: Path) -> bool:
    """Whether a daemon of this machine serves: asked over its Unix socket (plain, the owner's
    alone) when it has one, since its TCP address may serve TLS with a CA this client is not given;
    a TLS daemon without a socket (a data directory path too long for one, off Linux) records its
    address only once it serves, which is then the answer."""
    from stigmer_core.local_socket import UnixTarget, socket_path

    path = socket_path(data_dir)
    if path is not None and path.exists():
        unix = UnixTarget(path)
        try:
            return serving(unix.address)
        finally:
            unix.close()
    return daemon.tls or serving(daemon.address)


STOP_SECONDS = 5.0
"""How long a daemon that did not become ready is given to end after SIGTERM, then after SIGKILL."""


def wait_ready(files: Files, process: subprocess.Popen[bytes], timeout: float) -> Running:
    """Block until the spawned daemon serves, or fail with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            _forget(files, process.pid)
            said = (_last_error(files) or "").rstrip(".")  # its sentence ends here, before "; see"
            raise CliError(
                f"the daemon exited with code {code} while starting{f': {said}' if said else ''}; see {files.log_file}",
                details=_log_tail(files),
            )
        found = running(files.data_dir)
        if found is not None and found.pid == process.pid and found.address and _ready(found, files.data_dir):
            return found
        time.sleep(POLL)
    # A daemon still starting holds off a SIGTERM until it serves (then drains and stops): one
    # importing a slow plugin went on, and started serving, after this said it was stopped. Its
    # writes so far are transactions, so a kill loses none of them.
    how = "stopped"
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        how = "killed"
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_SECONDS)
    if process.poll() is None:
        raise CliError(
            f"the daemon did not become ready within {timeout:g}s, and it is still running (pid {process.pid}) "
            f"though it was sent SIGTERM and SIGKILL; see {files.log_file}",
            details=_log_tail(files),
        )
    _forget(files, process.pid)
    raise CliError(
        f"the daemon did not become ready within {timeout:g}s, so it was {how} (pid {process.pid}); see "
        f"{files.log_file}, and give a longer --timeout if it was still starting (a kind plugin slow to import)",
        details=_log_tail(files),
    )


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL)
    return condition()


def stop(files: Files, daemon: Running, *, timeout: float, force: bool) -> bool:
    """SIGTERM, wait for the lock to be released and the process to end; SIGKILL only if ``force``.

    Returns whether it had to be killed.
    """

    def gone() -> bool:
        return running(files.data_dir) is None and not alive(daemon.pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGTERM)
    killed = False
    if not _wait(gone, timeout):
        if not force:
            raise CliError(
                f"the daemon (pid {daemon.pid}) did not stop within {timeout:g}s; `stigmer local stop --force` kills it"
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGKILL)
        killed = True
        if not _wait(gone, 5.0):
            raise CliError(f"the daemon (pid {daemon.pid}) survived SIGKILL")
    _forget(files, daemon.pid)
    return killed


def hung_in_stop(log: Path | None) -> bool:
    """Whether the last run in ``log`` (a daemon's ``started_log``, found before it stopped) hung
    in its stop and its bound ended it (``stop_bound``): the stack of every thread is there, and
    `local stop` says so rather than only "stopped"."""
    from stigmer_core.stop_bound import HUNG

    if log is None:
        return False
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return HUNG.search(text.rsplit(f"\n{START_MARK}", 1)[-1]) is not None


def started_log(files: Files, daemon: Running) -> Path | None:
    """The log of this daemon, if ``local start`` spawned it (its pid file names the daemon's pid).

    A daemon run with ``stigmer serve`` has none and logs to its own terminal;
    one an earlier release started is found by the shared pid file it wrote.
    """
    for pid_file, log_file in files.layouts:
        if _names(pid_file, daemon.pid) and log_file.exists():
            return log_file
    return None
