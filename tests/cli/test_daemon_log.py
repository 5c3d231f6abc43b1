"""A daemon's log keeps the tracebacks that a command's one-line output leaves out, and dates its lines."""

from __future__ import annotations

import datetime
import re
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


def _stderr(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOGS_A_BUG, *args], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stderr


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
