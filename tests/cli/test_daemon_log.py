"""A daemon's log keeps the tracebacks that a command's one-line output leaves out, and dates its lines."""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

# `stigmer serve` as the command line runs it, the daemon's work replaced by what a plugin's
# failing step leaves in its log: an error logged with its traceback
LOGS_A_BUG = """
import logging, sys
import stigmer_core.server as server

def bug(*args, **kwargs):
    try:
        raise RuntimeError("a step's bug")
    except RuntimeError:
        logging.getLogger("stigmer_core.pipeline.step").error("internal error in step 'boom'", exc_info=True)
    return 0

server.serve = bug
from stigmer_core.cli.app import main
sys.argv = ["stigmer", *sys.argv[1:]]
main()
"""


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LOGS_A_BUG, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _stderr(*args: str) -> str:
    return _run(*args).stderr


def test_the_daemon_logs_a_bug_with_its_traceback(tmp_path: Path) -> None:
    """The answer to the caller says the server's log has the traceback; it was one line unless
    the daemon ran with -v (which also logs every debug line)."""
    logged = _stderr("serve", "--data-dir", str(tmp_path / "data"))
    assert "ERROR stigmer_core.pipeline.step: internal error in step 'boom'" in logged
    assert "Traceback (most recent call last):" in logged and "RuntimeError: a step's bug" in logged


def test_the_daemons_lines_carry_their_time_in_utc(tmp_path: Path) -> None:
    """Its log is read after the fact, beside other hosts': each line starts with an ISO 8601 UTC
    time to the millisecond, whether or not the daemon runs with -v."""
    for verbose in ((), ("-v",)):
        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        logged = _stderr(*verbose, "serve", "--data-dir", str(tmp_path / "data"))
        after = datetime.datetime.now(datetime.UTC)
        line = re.search(r"^(\S+) ERROR stigmer_core\.pipeline\.step: internal error in step 'boom'$", logged, re.M)
        assert line is not None, logged
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line[1]), line[1]
        stamped = datetime.datetime.strptime(line[1], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert before <= stamped <= after


def _records(stderr: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in stderr.splitlines()]


def test_a_json_log_is_one_object_per_record_with_its_traceback_inside(tmp_path: Path) -> None:
    """For a log collector, which takes each line for a record: every line of stderr parses, and the
    traceback is a field of its record, not lines of its own. The flag, its variable and the config
    file's setting each ask for it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("server:\n  log_format: json\n")
    asked = {
        "flag": ((*("serve", "--log-format", "json"),), {}),
        "variable": (("serve",), {"STIGMER_LOG_FORMAT": "json"}),
        "config file": (("serve",), {"STIGMER_HOME": str(home)}),
    }
    for how, (args, env) in asked.items():
        done = _run(*args, "--data-dir", str(tmp_path / "data"), env=env)
        assert done.returncode == 0, (how, done.stderr)
        records = _records(done.stderr)
        assert [r["message"] for r in records] == ["internal error in step 'boom'", "stigmer daemon stopped (exit code 0)"]
        assert records[1]["level"] == "INFO" and records[1]["logger"] == "stigmer", records[1]
        assert done.stdout == "", "the start and stop lines are records of the log too, not plain text on stdout"
        record = records[0]
        assert record["level"] == "ERROR" and record["logger"] == "stigmer_core.pipeline.step", record
        assert record["exception"].startswith("Traceback (most recent call last):"), record
        assert record["exception"].endswith("RuntimeError: a step's bug"), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record


def test_a_log_format_that_is_none_stops_the_start(tmp_path: Path) -> None:
    """Before the store opens: a daemon logging in a format nobody parses is not started."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("server:\n  log_format: yaml\n")
    done = _run("serve", "--data-dir", str(tmp_path / "data"), env={"STIGMER_HOME": str(home)})
    assert done.returncode != 0
    assert "server.log_format must be text or json, not 'yaml'" in done.stderr, done.stderr
    assert "internal error" not in done.stderr
    flagged = _run("serve", "--log-format", "xml", "--data-dir", str(tmp_path / "data"))
    assert flagged.returncode == 2
    assert "Invalid value for '--log-format': 'xml' is not one of 'text', 'json'" in flagged.stderr, flagged.stderr
    # from the variable, said as the variable's: the user gave no flag
    varied = _run("serve", "--data-dir", str(tmp_path / "data"), env={"STIGMER_LOG_FORMAT": "xml"})
    assert varied.returncode == 2
    assert "Invalid value for '--log-format' (env STIGMER_LOG_FORMAT): 'xml'" in varied.stderr, varied.stderr


def test_a_json_daemon_says_its_wait_and_its_last_error_as_records(tmp_path: Path) -> None:
    """With --log-format json, the wait for the database and the error the start stopped on were
    plain `stigmer: …` lines among the records, which a collector parsing each line failed on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    store = f"postgresql://stigmer@127.0.0.1:{port}/stigmer?connect_timeout=1"
    done = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--log-format", "json", "--store", store,
         "--store-wait", "1", "--data-dir", str(tmp_path / "data"), "--address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    records = _records(done.stderr)  # every line parses
    said = [(r["level"], r["message"].split(":", 1)[0]) for r in records]
    assert said == [
        ("WARNING", "waiting up to 1 s for the database (--store-wait)"),
        ("ERROR", "waited 1 s for the database (--store-wait)"),
    ], said


def test_a_json_daemons_start_and_stop_lines_are_records_of_its_log(tmp_path: Path) -> None:
    """They went to stdout as plain text, and under systemd both streams reach one journal: a
    collector parsing JSON met four lines it could not read per daemon lifetime."""
    import signal
    import time

    from stigmer_core.datadir import holder

    data = tmp_path / "data"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--log-format", "json", "--address", "127.0.0.1:0",
         "--data-dir", str(data), "--drain", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (holder(data) or {}).get("address") and time.monotonic() < deadline and daemon.poll() is None:
        time.sleep(0.05)
    daemon.send_signal(signal.SIGTERM)
    out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0 and out == "", (daemon.returncode, out, err)
    said = [r["message"].split(":")[0].split(" (")[0] for r in _records(err) if r["logger"] == "stigmer"]
    assert said == [
        "stigmer daemon listening on 127.0.0.1",  # its port follows
        "stigmer daemon draining",
        "stigmer daemon stopping",
        "stigmer daemon stopped",
    ], said
