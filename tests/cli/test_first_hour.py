"""What a newcomer meets first: start-up, --version, typos, completion, the daemon's own lines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from stigmer_core import config
from stigmer_core.cli import options

from .conftest import TIMEOUT, Stigmer, free_port, lines, write
from .test_resources import CODER

HEAVY = ("grpc", "protovalidate", "google.protobuf", "stigmer_core.application")


def _imported(stigmer: Stigmer, *args: str) -> set[str]:
    """Modules a ``stigmer`` run imports, from ``-X importtime``: run where a user runs it, outside the
    source tree, whose ``stigmer_core.egg-info`` (first on ``sys.path`` from there) lists the plugins a
    second time and has the copies compared."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stigmer_core.cli", *args],
        cwd=stigmer.home.parent,
        capture_output=True,
        text=True,
        env=stigmer.env(),
        timeout=TIMEOUT,
        check=True,
    )
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_and_version_import_neither_grpc_nor_the_kinds(stigmer: Stigmer) -> None:
    for args in (("--help",), ("--version",), ("get", "--help")):
        modules = _imported(stigmer, *args)
        assert "click" in modules  # the measurement sees imports at all
        loaded = sorted(m for m in modules if m.split(".")[0] in {"grpc", "protovalidate"} or m in HEAVY)
        assert loaded == [], f"stigmer {' '.join(args)} imported {loaded}"


def test_help_imports_no_command(stigmer: Stigmer) -> None:
    """Listing the commands read each one's help from its module: a quarter of ``--help``'s start-up."""
    modules = _imported(stigmer, "--help")
    assert "stigmer_core.cli.app" in modules
    loaded = sorted(m for m in modules if m.startswith("stigmer_core.cli.commands"))
    assert loaded == [], f"stigmer --help imported {loaded}"


def test_help_lists_each_command_as_the_command_itself_would() -> None:
    """``--help`` lists commands from ``SUMMARIES``: the listing is the one click makes from the
    commands themselves, at any width (a reworded docstring fails here until its summary follows)."""
    import importlib

    import click

    from stigmer_core.cli import app

    assert set(app.SUMMARIES) == set(app.COMMANDS)
    loaded = {}
    for name, where in app.COMMANDS.items():
        module, _, attribute = where.partition(":")
        loaded[name] = getattr(importlib.import_module(module), attribute)

    def listing(group: click.Group, width: int) -> str:
        ctx = click.Context(group, info_name="stigmer", terminal_width=width)
        formatter = ctx.make_formatter()
        group.format_commands(ctx, formatter)
        return formatter.getvalue()

    for width in (50, 80, 120, 250):
        lazy = listing(app.StigmerGroup(name="stigmer"), width)
        made = listing(click.Group(name="stigmer", commands=loaded), width)
        assert "whoami" in lazy and lazy == made, width


def test_kinds_imports_no_grpc(stigmer: Stigmer) -> None:
    """Listing the installed kinds calls nothing: grpc (0.08 s of its 0.57) came with the plugin
    manager, which imported it for the daemon's interceptors. Nor does it seal a secret or compare
    releases: cryptography and packaging (about 0.03 s) come when a box is made or releases met."""
    modules = _imported(stigmer, "kinds")
    assert "stigmer_core.plugins" in modules  # the kinds were read from the installed plugins
    assert "stigmer_plugins.secrets" in modules  # the plugin that seals secrets was loaded, without them
    unused = {"grpc", "protovalidate", "cryptography", "packaging"}
    loaded = sorted(m for m in modules if m.split(".")[0] in unused)
    assert loaded == [], f"stigmer kinds imported {loaded}"


def test_help_and_version_import_only_what_they_say(stigmer: Stigmer) -> None:
    """attrs (the errors' and the caller's classes), logging (set up for a command that runs) and
    the installed package's metadata (the version) took half of ``--version``'s start-up."""
    for args in (("--help",), ("--version",)):
        modules = _imported(stigmer, *args)
        assert "click" in modules
        loaded = sorted(modules & {"attr", "attrs", "logging", "importlib.metadata"})
        assert loaded == [], f"stigmer {' '.join(args)} imported {loaded}"


def test_version(stigmer: Stigmer) -> None:
    from importlib import metadata

    assert stigmer.ok("--version").strip() == f"stigmer {metadata.version('stigmer-core')}"


def test_backends_choice_matches_config() -> None:
    assert options.BACKENDS == config.BACKENDS


def test_kind_typo_suggests_the_kind(stigmer: Stigmer) -> None:
    message = stigmer.fails("get", "agnets")
    assert message.startswith("unknown kind 'agnets' (did you mean 'agents'? known kinds: ")
    assert "did you mean" not in stigmer.fails("get", "zzzz")


def _complete(stigmer: Stigmer, line: str, *, kind: str = "plain") -> list[str]:
    """What click's bash completion offers for ``line`` (the last word is being completed), of one type."""
    words = line.split(" ")
    env = {**stigmer.env(), "_STIGMER_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    done = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli"], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    offered = [entry.split(",", 1) for entry in done.stdout.splitlines()]
    return [value for type_, value in offered if type_ == kind]


def test_completion_of_kinds_names_and_flags(stigmer: Stigmer, daemon: str) -> None:
    offered = _complete(stigmer, "stigmer get ag")
    assert {"agent", "agents", "agentinstance"} <= set(offered)
    assert all(word.startswith("ag") for word in offered)

    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.ok("apply", "-f", "-", input=CODER.replace("Coder", "Cook"))
    assert sorted(_complete(stigmer, "stigmer get agent co")) == ["coder", "cook"]
    assert _complete(stigmer, "stigmer delete agents cod") == ["coder"]
    assert {"--output", "--org"} <= set(_complete(stigmer, "stigmer get agent --o"))
    assert "export" in _complete(stigmer, "stigmer ex")
    assert _complete(stigmer, "stigmer apply -f exa", kind="file") == ["exa"]  # the shell completes paths
    assert {"agent", "agents"} <= set(_complete(stigmer, "stigmer export ag"))
    # call: its kind, then that kind's rpcs, custom ones included
    assert {"skill", "skills"} <= set(_complete(stigmer, "stigmer call sk"))
    assert {"push", "listVersions"} <= set(_complete(stigmer, "stigmer call skill "))
    assert _complete(stigmer, "stigmer call skill listV") == ["listVersions"]


def test_completion_scripts(stigmer: Stigmer) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = stigmer.ok("completion", shell)
        assert "_STIGMER_COMPLETE" in script, shell
    assert stigmer("completion", "tcsh").code == 2


def test_unreachable_hint_names_the_endpoint(stigmer: Stigmer) -> None:
    message = stigmer.fails("get", "agent", "--backend", "remote", "--endpoint", "127.0.0.1:1")
    assert "`stigmer backend status --backend remote --endpoint 127.0.0.1:1`" in message


def test_serve_on_a_taken_port_prints_one_line(stigmer: Stigmer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = stigmer("serve", "--address", f"127.0.0.1:{port}", "--data-dir", str(stigmer.data_dir))
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        f"stigmer: cannot listen on 127.0.0.1:{port}: the address is in use or not local to this machine"
    ]


def test_serve_says_stopped_and_status_has_no_log_file(stigmer: Stigmer) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stigmer.env(),
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        status = stigmer.ok("local", "status")
        assert "log file: none (started with `stigmer serve`" in status
        assert "daemon.log" not in status
    finally:
        os.kill(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert lines(out)[-1] == "stigmer daemon stopped (exit code 0)"


def test_start_says_where_pid_and_log_files_are(stigmer: Stigmer) -> None:
    out = stigmer.start().output
    assert f"log file: {stigmer.home / 'daemon.log'} (beside the data directory)" in out
    assert f"pid file: {stigmer.home / 'daemon.pid'} (beside the data directory)" in out


def test_empty_filtered_list_names_the_filter(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    stigmer.ok("apply", "-f", str(write(tmp_path / "c.yaml", CODER)))
    empty = stigmer("list", "agent", "-l", "team=nobody", "-l", "tier=gold")
    assert empty.code == 0 and empty.out == ""
    assert "no agents with labels team=nobody,tier=gold found in org 'local'" in empty.err


def test_rule_messages_read_as_english_with_the_field_as_written(stigmer: Stigmer, tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "kind: Session\nmetadata: {name: x}\nspec: {subject: hi}\n")
    assert (
        stigmer.fails("apply", "-f", str(path))
        == f"{path}, document 1 (session/x): spec.agentInstanceId: must not be empty"
    )
