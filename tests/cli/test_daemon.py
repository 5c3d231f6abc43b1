"""``stigmer local start|status|stop``: the background daemon's life cycle."""

from __future__ import annotations

import subprocess
import sys

from .conftest import Stigmer


def test_start_status_stop(stigmer: Stigmer) -> None:
    address = stigmer.start().address
    log_file = stigmer.home / "daemon.log"
    pid_file = stigmer.home / "daemon.pid"
    assert pid_file.exists() and log_file.exists()

    again = stigmer.ok("local", "start")
    assert "already running" in again and address in again

    status = stigmer.ok("local", "status")
    assert f"listening on {address}" in status
    assert f"data directory: {stigmer.data_dir}" in status
    assert "agent " in status and "agentinstance " in status  # one count row per kind

    stopped = stigmer.ok("local", "stop")
    assert "stigmer daemon stopped" in stopped
    assert not pid_file.exists()

    message = stigmer.fails("local", "status", code=3)
    assert message.startswith("the stigmer daemon is not running")
    assert stigmer.fails("local", "stop").startswith("the stigmer daemon is not running")


def test_status_counts_objects_per_kind(stigmer: Stigmer, daemon: str) -> None:
    for name in ("one", "two"):
        stigmer.ok("apply", "-f", "-", input=f"kind: Agent\nmetadata: {{name: {name}}}\n")
    rows = dict(line.split() for line in stigmer.ok("local", "status").splitlines() if line.startswith("agent"))
    assert (rows["agent"], rows["agentinstance"]) == ("2", "2")  # each agent has its default instance


def test_stale_pid_file_is_cleaned(stigmer: Stigmer) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=30
    )
    stigmer.home.mkdir(parents=True)
    pid_file = stigmer.home / "daemon.pid"
    pid_file.write_text(gone.stdout)

    message = stigmer.fails("local", "status", code=3)
    assert "removed a stale pid file" in message
    assert not pid_file.exists()

    pid_file.write_text(gone.stdout)
    assert "removed a stale pid file" in stigmer.start().output
    assert pid_file.read_text().strip() != gone.stdout.strip()


def test_start_reports_a_daemon_that_cannot_listen(stigmer: Stigmer) -> None:
    address = stigmer.start(data_dir=stigmer.home / "first" / "data").address
    second = stigmer.home / "second" / "data"
    message = stigmer.fails("local", "start", "--address", address, "--data-dir", str(second))
    assert message.startswith("the daemon exited with code 1 while starting")
    assert str(stigmer.home / "second" / "daemon.log") in message
    assert not (stigmer.home / "second" / "daemon.pid").exists()
