"""``stigmer local start|status|stop``: the background daemon's life cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import TIMEOUT, Stigmer, free_port


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


def test_starts_together_leave_one_daemon_with_its_pid_file(stigmer: Stigmer) -> None:
    """Each start found no daemon and wrote its own pid; each loser, refused by the daemon that
    ran, removed the pid file if it named its own: the daemon that ran had none, and `local
    status` said it logged nowhere."""
    stigmer.started.append(stigmer.data_dir)
    address = f"127.0.0.1:{free_port()}"
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "stigmer_core.cli", "local", "start", "--address", address],
            env=stigmer.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    answers = [start.communicate(timeout=TIMEOUT) for start in starts]
    assert [start.returncode for start in starts] == [0, 0, 0], answers
    said = sorted(
        "started" if "daemon started" in out else "running" if "already running" in out else out for out, _ in answers
    )
    assert said == ["running", "running", "started"], answers
    pid = int((stigmer.home / "daemon.pid").read_text())
    status = stigmer.ok("local", "status")
    assert f"(pid {pid})" in status and f"log file: {stigmer.home / 'daemon.log'}" in status, status
    assert f"stigmer daemon stopped (pid {pid})" in stigmer.ok("local", "stop")


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
    # what stopped it is told where the user looks, not only in the log
    assert message.startswith(f"the daemon exited with code 1 while starting: cannot listen on {address}: "), message
    assert str(stigmer.home / "second" / "daemon.log") in message  # a directory named data keeps these names
    assert not (stigmer.home / "second" / "daemon.pid").exists()


def test_sibling_data_directories_keep_their_own_pid_file_and_log(stigmer: Stigmer) -> None:
    parent = stigmer.home / "pp"
    first = stigmer.start(data_dir=parent / "d1")
    second = stigmer.start(data_dir=parent / "d2")
    for name, started in (("d1", first), ("d2", second)):
        assert f"pid file: {parent / f'{name}.daemon.pid'} (beside the data directory)" in started.output
        assert f"log file: {parent / f'{name}.daemon.log'} (beside the data directory)" in started.output
    pids = {name: (parent / f"{name}.daemon.pid").read_text().strip() for name in ("d1", "d2")}
    assert pids["d1"] != pids["d2"]
    assert not (parent / "daemon.pid").exists() and not (parent / "daemon.log").exists()
    status = stigmer.ok("local", "status", "--data-dir", str(parent / "d2"))
    assert f"stigmer daemon running (pid {pids['d2']})" in status
    assert f"log file: {parent / 'd2.daemon.log'}" in status
    stigmer.ok("local", "stop", "--data-dir", str(parent / "d1"))
    assert not (parent / "d1.daemon.pid").exists()
    assert (parent / "d2.daemon.pid").read_text().strip() == pids["d2"]


def test_a_daemon_started_with_the_shared_pid_file_is_still_found(stigmer: Stigmer) -> None:
    parent = stigmer.home / "pp"
    stigmer.start(data_dir=parent / "d1")
    for suffix in ("pid", "log"):  # where an earlier release put them, for every data directory of the parent
        (parent / f"d1.daemon.{suffix}").rename(parent / f"daemon.{suffix}")
    status = stigmer.ok("local", "status", "--data-dir", str(parent / "d1"))
    assert f"log file: {parent / 'daemon.log'}" in status
    assert "stopped" in stigmer.ok("local", "stop", "--data-dir", str(parent / "d1"))
    assert not (parent / "daemon.pid").exists()


HANG_ON_CLOSE = """
import threading
from stigmer_core.store.lmdb_store import LmdbStore

def close_never_returns(self):
    threading.Event().wait()

LmdbStore.close = close_never_returns
"""


def test_a_daemon_whose_stop_hangs_ends_itself_and_stop_says_where_its_stacks_are(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """`local stop` waited its 30 s and failed, and the daemon held its data directory and port
    with no word of where it was stuck."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_ON_CLOSE)  # every process of this test: its store never closes
    stigmer.python_path.append(hook)
    stigmer.started.append(stigmer.data_dir)
    address = f"127.0.0.1:{free_port()}"
    limit = {"STIGMER_STOP_LIMIT_SECONDS": "4.5"}  # a fraction: faulthandler then writes 0:00:04.500000
    started = stigmer("local", "start", "--address", address, env=limit)
    assert started.code == 0, started.err
    stopped = stigmer("local", "stop")
    assert stopped.code == 0, stopped.err
    assert "stigmer daemon stopped" in stopped.out
    log = stigmer.home / "daemon.log"
    warning = (
        f"its stop hung, and it ended itself at its limit: the stack of each of its threads is at the end of {log}"
    )
    assert warning in stopped.err
    assert "close_never_returns" in log.read_text()
    stigmer.started.clear()  # stopped, and its hang is this test's own: nothing for the fixture to report

    stigmer.python_path.remove(hook)
    again = stigmer.start()  # the data directory and the store are free, and open as after any crash
    assert again.address
    assert "its stop hung" not in stigmer("local", "stop").err


def test_a_start_asking_for_another_address_than_the_running_daemons_is_refused(stigmer: Stigmer) -> None:
    """It said "already running on X" and exited 0, and a script went on to call Y, where nothing listened."""
    address = stigmer.start().address
    elsewhere = f"127.0.0.1:{free_port()}"
    message = stigmer.fails("local", "start", "--address", elsewhere)
    assert message == (
        f"the stigmer daemon of {stigmer.data_dir} already runs (pid {int((stigmer.home / 'daemon.pid').read_text())}) "
        f"on {address}, not on {elsewhere}: `stigmer local stop` first to move it, or give another --data-dir for a "
        "second daemon"
    )
    port = address.rsplit(":", 1)[1]
    for same in (address, f"localhost:{port}", "127.0.0.1:0"):  # the address it serves on, however asked for
        assert "already running" in stigmer.ok("local", "start", "--address", same)
    assert "already running" in stigmer.ok("local", "start")  # no address asked for: whichever it has


def test_an_address_without_a_port_is_a_usage_error(stigmer: Stigmer) -> None:
    """`--address localhost` started a daemon on port 443 (grpc's default), exit 0, as root."""
    for command in ("serve", "local start"):
        for given in ("localhost", "127.0.0.1:65536", "[::1]"):
            said = stigmer.fails(*command.split(), "--address", given, code=2)
            assert said.startswith(f"invalid --address '{given}': use HOST:PORT (a port from 0, a free one"), said
    assert not (stigmer.data_dir / "data.mdb").exists(), "nothing was opened"


def test_a_start_past_its_timeout_says_it_stopped_the_daemon(stigmer: Stigmer) -> None:
    """It said only that the daemon was not ready, though it had stopped it: the log showed it
    listening, and a user took it for running."""
    message = stigmer.fails("local", "start", "--timeout", "0.01")
    assert "did not become ready within 0.01s, so it was stopped (pid " in message, message
    assert "give a longer --timeout" in message
    assert "the stigmer daemon is not running" in stigmer.fails("local", "status", code=3)


SLOW_START = """
import signal, sys, time
if "serve" in sys.orig_argv:  # the daemon, not the command starting it
    signal.signal(signal.SIGTERM, lambda *_: None)  # as a daemon does while it starts: it drains once serving
    time.sleep(60)  # a kind plugin slow to import
"""


def test_a_start_past_its_timeout_kills_a_daemon_that_holds_off_its_stop(stigmer: Stigmer, tmp_path: Path) -> None:
    """A daemon importing a slow plugin held off the SIGTERM and went on to serve, while `local
    start` said it was stopped; a retried start was then told it "is starting"."""
    site = tmp_path / "slow"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    stigmer.python_path.append(site)
    message = stigmer.fails("local", "start", "--timeout", "1")
    assert "did not become ready within 1s, so it was killed (pid " in message, message
    pid = int(message.split("(pid ", 1)[1].split(")", 1)[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert "the stigmer daemon is not running" in stigmer.fails("local", "status", code=3)


def test_a_command_whose_plugins_changed_since_the_daemon_started_is_warned(stigmer: Stigmer) -> None:
    """With a kind's protos regenerated and the daemon not restarted, the daemon read the CLI's
    requests with its older protos: `apply` said `created` and a new field was dropped unseen."""
    import json

    from stigmer_core.datadir import LOCK_NAME, holder

    stigmer.start()
    running = holder(stigmer.data_dir)
    assert running is not None and set(running["kinds"]) >= {"Agent", "Environment"}
    assert "started with other definitions" not in stigmer("get", "agents").err
    running["kinds"]["Agent"] = "0" * 16  # as a daemon started before the Agent plugin changed records it
    (stigmer.data_dir / LOCK_NAME).write_text(json.dumps(running))
    said = stigmer("get", "agents").err
    assert "started with other definitions of Agent than this command's installed plugins" in said, said
    assert "restart it (`stigmer local stop`, then `stigmer local start`)" in said
