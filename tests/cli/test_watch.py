"""``stigmer get KIND --watch``: the list, then one line per change, until Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import TIMEOUT, Stigmer, write

BOT = """\
kind: Agent
metadata:
  name: Bot
spec:
  description: first
"""
BOT_CHANGED = BOT.replace("first", "second")
OTHER = BOT.replace("Bot", "Other")


def test_get_watch_needs_a_daemon(stigmer: Stigmer) -> None:
    assert "needs a running daemon" in stigmer.fails("get", "agents", "--watch")


_AT_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'stigmer'; runpy.run_module('stigmer_core.cli', run_name='__main__')"
)
"""``stigmer`` as a shell starts it in the foreground: Ctrl-C raises KeyboardInterrupt. A child
inherits an ignored SIGINT (a test worker sometimes runs with it ignored), and Python then
leaves it ignored, so the test sets it rather than inheriting it."""


def _watching(stigmer: Stigmer, *args: str) -> subprocess.Popen[str]:
    """`stigmer get agents --watch` as a shell runs it in the foreground."""
    return subprocess.Popen(
        [sys.executable, "-c", _AT_A_TERMINAL, "get", "agents", "--watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stigmer.env(),
    )


def test_get_watch_prints_the_list_then_each_change(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    stigmer.ok("apply", "-f", str(write(tmp_path / "bot.yaml", BOT)))
    watcher = _watching(stigmer)
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()
        listed = watcher.stdout.readline()
        assert header.split()[:2] == ["NAME", "ID"]
        assert listed.split()[0] == "bot"
        stigmer.ok("apply", "-f", str(write(tmp_path / "changed.yaml", BOT_CHANGED)))
        stigmer.ok("apply", "-f", str(write(tmp_path / "other.yaml", OTHER)))
        stigmer.ok("delete", "agent", "bot")
        events = [watcher.stdout.readline().split() for _ in range(3)]  # stop after 3 events
        assert [e[:2] for e in events] == [["MODIFIED", "bot"], ["ADDED", "other"], ["DELETED", "bot"]]
        revisions = [int(e[2]) for e in events]
        assert revisions == sorted(set(revisions))
        watcher.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        assert watcher.wait(TIMEOUT) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(TIMEOUT)


def test_a_json_watch_is_one_object_per_line_from_the_first_and_a_table_of_every_org_names_it(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    """``-o json`` printed the list as a JSON array, then one object per line: a reader of lines
    tripped on the array. Under ``-A`` a change's line left out the org the table showed."""
    stigmer.ok("apply", "-f", str(write(tmp_path / "bot.yaml", BOT)))
    watcher = _watching(stigmer, "-o", "json")
    table = _watching(stigmer, "-A")
    try:
        assert watcher.stdout is not None and table.stdout is not None
        listed = json.loads(watcher.stdout.readline())
        assert (listed["type"], listed["object"]["metadata"]["slug"]) == ("ADDED", "bot")
        assert listed["revision"] == int(listed["object"]["metadata"]["resourceVersion"])
        assert "principal" not in listed  # a listed object: its audit names its writers
        assert table.stdout.readline().split()[:3] == ["ORG", "NAME", "ID"]
        assert table.stdout.readline().split()[:2] == ["local", "bot"]
        stigmer.ok("apply", "-f", str(write(tmp_path / "other.yaml", OTHER)))
        added = json.loads(watcher.stdout.readline())
        assert (added["type"], added["object"]["metadata"]["slug"]) == ("ADDED", "other")
        assert added["revision"] > listed["revision"]
        assert added["principal"] == "local"  # who made the change
        assert table.stdout.readline().split() == ["ADDED", "local", "other", str(added["revision"])]
    finally:
        for process in (watcher, table):
            process.send_signal(signal.SIGINT)
            if process.wait(TIMEOUT) != 0:
                raise AssertionError(process.stderr.read() if process.stderr else "")


def test_get_with_a_selector_lists_and_watches_the_objects_with_its_labels(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    """As `list -l`, and as kubectl's `get -l`: the list holds the objects with every label given,
    and the watch their changes, an object that takes a label on ADDED and one losing it DELETED."""
    labelled = BOT.replace("  name: Bot\n", "  name: Bot\n  labels: {team: ops}\n")
    joining = OTHER.replace("  name: Other\n", "  name: Other\n  labels: {team: ops}\n")
    stigmer.ok("apply", "-f", str(write(tmp_path / "bot.yaml", labelled)))
    stigmer.ok("apply", "-f", str(write(tmp_path / "other.yaml", OTHER)))
    assert [line.split()[0] for line in stigmer.ok("get", "agents", "-l", "team=ops").splitlines()] == ["NAME", "bot"]
    assert "no agents with labels team=dev found in org 'local'" in stigmer("get", "agents", "-l", "team=dev").err
    both = stigmer("get", "agent", "bot", "-l", "team=ops")
    assert both.code == 2 and "give a NAME or -l, not both" in both.err, both
    assert "invalid label selector 'team': use key=value" in stigmer("get", "agents", "-l", "team").err

    watcher = _watching(stigmer, "-l", "team=ops")
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split()[:2] == ["NAME", "ID"]
        assert watcher.stdout.readline().split()[0] == "bot"
        stigmer.ok("apply", "-f", str(write(tmp_path / "other.yaml", OTHER.replace("first", "again"))))  # not shown
        stigmer.ok("apply", "-f", str(write(tmp_path / "in.yaml", joining)))
        stigmer.ok("apply", "-f", str(write(tmp_path / "out.yaml", BOT_CHANGED)))  # its labels gone: it leaves
        events = [watcher.stdout.readline().split() for _ in range(2)]
        assert [e[:2] for e in events] == [["ADDED", "other"], ["DELETED", "bot"]]
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(TIMEOUT) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(TIMEOUT)


def _watch_ended_by(stigmer: Stigmer, tmp_path: Path, stop: signal.Signals) -> list[str]:
    """What `get agents --watch` says last on stderr (it exits 1) when its daemon gets ``stop`` and
    does not come back within the 1 s the watch waits here."""
    import os

    from stigmer_core.datadir import holder

    stigmer.ok("apply", "-f", str(write(tmp_path / "bot.yaml", BOT)))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "get", "agents", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**stigmer.env(), "STIGMER_WATCH_RESUME_SECONDS": "1"},
    )
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        assert watcher.stdout.readline().split()[:2] == ["NAME", "ID"]
        assert watcher.stdout.readline().split()[0] == "bot"
        info = holder(stigmer.data_dir)
        assert info is not None
        os.kill(int(info["pid"]), stop)
        assert watcher.wait(TIMEOUT) == 1
        error = watcher.stderr.read().strip().splitlines()
        assert error, "nothing said"
        return error
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(TIMEOUT)


def test_a_watch_whose_daemon_dies_says_the_local_daemon_cannot_be_reached(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    """The broken stream was printed as grpc's words: `stigmer: Stream removed (Socket closed)`; then
    as a remote server's, with a hint for `--backend remote`."""
    error = _watch_ended_by(stigmer, tmp_path, signal.SIGKILL)  # the daemon dies under the watch
    expected = f"stigmer: cannot reach the local stigmer daemon of data directory {stigmer.data_dir} at {daemon}"
    assert error[-1].startswith(expected), error
    assert "Stream removed" not in error[-1] and "--backend remote" not in error[-1]
    assert "`stigmer local start` starts it again" in error[-1]


def test_a_watch_goes_on_across_a_daemon_restart(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    """A daemon restart ended the watch with exit 1 and "watch again with since_revision N", an
    option the CLI does not have. It resumes after the last event it printed: what changed
    while it was away is printed once, and nothing twice."""
    stigmer.ok("apply", "-f", str(write(tmp_path / "bot.yaml", BOT)))
    watcher = _watching(stigmer)
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        assert watcher.stdout.readline().split()[:2] == ["NAME", "ID"]
        assert watcher.stdout.readline().split()[0] == "bot"
        stigmer.ok("apply", "-f", str(write(tmp_path / "changed.yaml", BOT_CHANGED)))
        assert watcher.stdout.readline().split()[:2] == ["MODIFIED", "bot"]
        stigmer.ok("local", "stop")
        assert "the watch was cut" in watcher.stderr.readline()  # said before it waits for the daemon
        stigmer.ok("local", "start", "--address", daemon)
        stigmer.ok("apply", "-f", str(write(tmp_path / "other.yaml", OTHER)))  # maybe before it is back
        assert watcher.stdout.readline().split()[:2] == ["ADDED", "other"]
        stigmer.ok("delete", "agent", "bot")
        assert watcher.stdout.readline().split()[:2] == ["DELETED", "bot"]
        assert watcher.poll() is None  # still watching
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(TIMEOUT) == 0
        assert "watching again after revision" in watcher.stderr.read()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(TIMEOUT)


def test_a_resume_wait_that_is_not_seconds_is_refused_before_watching(stigmer: Stigmer, daemon: str) -> None:
    """``nan`` was taken as 0 (give up at once on the first restart) and ``-1`` as 0, silently."""
    for value in ("nan", "-1", "soon"):
        result = stigmer("get", "agents", "--watch", env={"STIGMER_WATCH_RESUME_SECONDS": value})
        assert result.code == 1, result.err
        assert f"STIGMER_WATCH_RESUME_SECONDS must be a number of seconds (0 or more), not '{value}'" in result.err
        assert result.out == "", "refused before the list was printed"


def test_a_watch_whose_daemon_stops_and_stays_away_says_to_run_it_again(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    """A daemon stopping (SIGTERM) ends each watch with the API's advice, "watch again with
    since_revision N": the command printed that when it gave up waiting, though `get` has no such
    flag; what a person can do is run the command again."""
    error = _watch_ended_by(stigmer, tmp_path, signal.SIGTERM)
    assert not any("since_revision" in line for line in error), error
    assert error[-1].startswith(f"stigmer: the stigmer server at {daemon} ended the watch"), error
    assert error[-1].endswith("was printed: run the command again"), error
