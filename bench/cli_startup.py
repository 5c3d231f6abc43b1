"""``python -m bench.cli_startup``: how long the ``stigmer`` command takes to start.

Each command runs in a fresh interpreter (a cold start of the process; the
files are in the page cache, as they are for a person typing commands), five
times, and the median is printed beside the median of ``python -c pass`` of
the same run, whose time no command can go below. Bytecode is cached (a
first, unmeasured run writes it), as it is for an installed command. Commands run against an
empty store (made by a first ``local start``) in a temporary ``STIGMER_HOME`` (in process, no daemon) and, for
``get``, against a daemon on 127.0.0.1 as well; last, ``stigmer local start``
from nothing to a daemon answering SERVING (it returns only then). Targets: ``--help``,
``--version`` and ``kinds`` under 0.15 s, ``get`` under 0.3 s. Each runs in the temporary home,
not the source tree: ``python -m`` puts the working directory first on ``sys.path``, where the
checkout's ``stigmer_core.egg-info`` would list every plugin a second time, which the installed
``stigmer`` command never sees.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

RUNS = 5
STIGMER = (sys.executable, "-m", "stigmer_core.cli")
COMMANDS: tuple[tuple[str, Sequence[str], float | None], ...] = (
    ("--version", (*STIGMER, "--version"), 0.15),
    ("--help", (*STIGMER, "--help"), 0.15),
    ("kinds", (*STIGMER, "kinds"), 0.15),
    ("get agents (in process)", (*STIGMER, "get", "agents"), 0.3),
)


def _median(argv: Sequence[str], env: dict[str, str]) -> float:
    subprocess.run(argv, env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=True, timeout=60)  # writes the .pyc files, if missing
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=True, timeout=60)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _daemon_start(env: dict[str, str], runs: int = RUNS) -> float:
    """Median seconds of ``local start`` (a daemon from nothing to SERVING), each stopped after."""
    times = []
    for _ in range(runs):
        address = f"127.0.0.1:{_free_port()}"
        start = time.perf_counter()
        subprocess.run((*STIGMER, "local", "start", "--address", address), env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        subprocess.run((*STIGMER, "local", "stop"), env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=False)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as home:
        env = {**os.environ, "STIGMER_HOME": home}
        # an installed command runs from cached bytecode: compiling every module on each start is not what users see
        for name in (
            "STIGMER_BACKEND",
            "STIGMER_DATA_DIR",
            "STIGMER_ENDPOINT",
            "STIGMER_ORG",
            "PYTHONDONTWRITEBYTECODE",
        ):
            env.pop(name, None)
        baseline = _median((sys.executable, "-c", "pass"), env)
        # an empty store, made as a first `local start` makes it: `get` reads a store, and refuses
        # a data directory holding none
        _daemon_start(env, runs=1)
        rows = [(name, _median(argv, env), target) for name, argv, target in COMMANDS]
        address = f"127.0.0.1:{_free_port()}"
        subprocess.run((*STIGMER, "local", "start", "--address", address), env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=True)
        try:
            rows.append(("get agents (daemon)", _median((*STIGMER, "get", "agents"), env), 0.3))
        finally:
            subprocess.run((*STIGMER, "local", "stop"), env=env, cwd=env["STIGMER_HOME"], capture_output=True, check=False)
        rows.append(("daemon start to SERVING", _daemon_start(env), None))
    print(f"stigmer start-up: median of {RUNS} cold runs, on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'command':<24}  {'median s':>8}  {'minus python':>12}  {'target s':>8}")
    print("-" * 60)
    print(f"{'python -c pass':<24}  {baseline:>8.3f}  {'':>12}  {'':>8}")
    for name, seconds, target in rows:
        shown = f"{target:.2f}" if target is not None else ""
        print(f"{name:<24}  {seconds:>8.3f}  {seconds - baseline:>12.3f}  {shown:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
