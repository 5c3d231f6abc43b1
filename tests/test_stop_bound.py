"""A daemon whose stop hangs still ends: at its stop limit with every thread's stack in its log,
or at once on a second signal. A daemon that ignored SIGTERM kept its data directory locked and
its port bound until something killed it, with no word of where it was stuck."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

READY = "stigmer daemon listening on "
STOPPING = "stigmer daemon stopping"

# The stop hangs where the daemon closes its store: the one place no grace period bounds.
HANGING = """
import sys, threading
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.server import serve

def close_never_returns(self):
    threading.Event().wait()

LmdbStore.close = close_never_returns
sys.exit(serve("127.0.0.1:0", sys.argv[1], grace=1, stop_limit=float(sys.argv[2])))
"""


def _start(data_dir: Path, stop_limit: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING, str(data_dir), str(stop_limit)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    _read_until(proc, READY)
    return proc


def _read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(timeout=left):
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line
            if not line:
                break
    proc.kill()
    raise AssertionError(f"no line starting {prefix!r}: {proc.communicate(timeout=10)}")


def _ended(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise AssertionError(f"the daemon was still running {timeout:g} s after the stop began") from None
    return out


def test_a_stop_that_hangs_ends_at_its_limit_with_every_threads_stack(tmp_path: Path) -> None:
    proc = _start(tmp_path / "data", stop_limit=4)
    proc.send_signal(signal.SIGTERM)
    stopping = _read_until(proc, STOPPING)
    assert "a stop still running after 4 s prints every thread's stack and exits 1" in stopping
    out = _ended(proc, timeout=30)
    assert proc.returncode == 1, out
    assert "Timeout (0:00:04)!" in out
    assert "most recent call first" in out
    assert "close_never_returns" in out  # the stack names where the stop was stuck


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_second_signal_during_a_hanging_stop_ends_it_at_once(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _start(tmp_path / "data", stop_limit=600)
    proc.send_signal(sig)
    assert "another SIGTERM or Ctrl-C stops it now" in _read_until(proc, STOPPING)  # printed once armed
    proc.send_signal(sig)
    _ended(proc, timeout=30)  # not the 600 s of its limit
    assert proc.returncode == -sig


def _pid_one(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    """The hanging daemon as the first process of a PID namespace of its own (a container's
    daemon without an init), and its pid as this namespace sees it."""
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", HANGING, str(data_dir), "600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    _read_until(proc, READY)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return proc, int(children[0])


def test_a_second_signal_ends_a_hanging_stop_of_a_namespaces_first_process(tmp_path: Path) -> None:
    """The kernel's default action never reaches a PID namespace's first process: the second
    SIGTERM of `docker stop` did nothing to a daemon run as a container's PID 1."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        # CI runs as root and must run this; a developer without CAP_SYS_ADMIN cannot make a namespace
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to make a PID namespace: {probe.stderr.strip()}")
        pytest.skip(f"cannot make a PID namespace here ({probe.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    proc, daemon = _pid_one(tmp_path / "data")
    os.kill(daemon, signal.SIGTERM)  # as from the host: the namespace's parent
    assert "another SIGTERM or Ctrl-C stops it now" in _read_until(proc, STOPPING)
    os.kill(daemon, signal.SIGTERM)
    _ended(proc, timeout=30)  # not the 600 s of its limit
    assert proc.returncode == 128 + signal.SIGTERM


def test_a_daemon_whose_stderr_was_replaced_is_still_bounded_and_writes_to_the_process_stderr() -> None:
    """faulthandler needs a file descriptor: a daemon run in a process whose ``sys.stderr`` a test
    runner had replaced failed its stop with ``UnsupportedOperation: fileno``."""
    script = (
        "import io, sys, time\n"
        "from stigmer_core import stop_bound\n"
        "sys.stderr = io.StringIO()\n"
        "stop_bound.arm(0.5)\n"
        "time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1, done
    assert "Timeout (0:00:00.500000)!" in done.stderr
