"""The benchmark harness runs end to end and reports every scenario.

Only the shape of the results is checked, never a speed: timings on a shared
machine are not something a test can assert without flaking.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = (
    "echo", "get", "get_by_reference", "list", "list_label", "create", "store", "vs_sqlite", "scale", "writes",
    "streams", "metrics", "memory",
)  # fmt: skip
ENGINE_ROWS = ("get", "get_by_reference", "list", "create.durable.serial", "create.durable.c32", "create.nosync.serial")
SCALE_ROWS = ("get", "get_by_reference", "list", "list_label", "list_by_agent")
WRITE_ROWS = ("apply_unchanged", "update", "apply_changed", "create_agent", "create_environment", "delete_cascade")

MEASUREMENTS = (
    "echo.net.serial",
    "echo.net.c32",
    "echo.aio.serial",
    "echo.aio.c32",
    "get.net.serial",
    "get.net.c32",
    "get.inproc.serial",
    "get.inproc.c32",
    "get_by_reference.net.serial",
    "get_by_reference.inproc.serial",
    "list.net.serial",
    "list.inproc.serial",
    "list_label.net.serial",
    "list_label.inproc.serial",
    "create.net.serial",
    "create.net.c32",
    "create.inproc.serial",
    "create.inproc.c32",
    "store.put.t1",
    "store.put.t16",
    "store.event.nosync",
    "store.event_pruning.nosync",
    "store.batch1000",
    *(f"vs_sqlite.{engine}.{row}" for engine in ("lmdb", "sqlite_json") for row in ENGINE_ROWS),
    *(f"scale.n{size}.{row}" for size in (1000, 2000) for row in SCALE_ROWS),
    *(f"writes.{row}.{mode}" for row in WRITE_ROWS for mode in ("serial", "c32")),
    "writes.framework_cpu",
    *(f"streams.{watches}.{mode}" for watches in ("w0", "w60") for mode in ("loop", "threads")),
    *(f"metrics.{row}.{served}.c32" for row in ("get", "create") for served in ("on", "off")),
    "metrics.wrapper_cpu",
)


def _run_quick(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "calls/s" in done.stdout
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    doc = _run_quick(tmp_path)

    assert doc["quick"] is True
    assert doc["failures"] == {}
    assert doc["budget"]["rounds"] >= 2, "the quick run should exercise merging rounds"
    assert doc["ran"] == list(SCENARIOS)
    assert set(doc["scenarios"]) == set(MEASUREMENTS)
    for name, row in doc["scenarios"].items():
        if name == "writes.framework_cpu":  # figures only, no calls of its own
            for figure in (
                "agent_create_us",
                "environment_create_us",
                "get_us",
                "agent_create_per_raw_txn",
                "agent_create_less_own_commit_us",
                "agent_create_own_commit_us",
            ):
                assert row[figure] > 0, figure
            continue
        if name == "metrics.wrapper_cpu":  # figures only: the wrappers timed around a handler doing nothing
            assert row["sync_us"] > 0 and row["async_us"] > 0, row
            continue
        assert row["calls"] > 0, name
        assert row["seconds"] > 0, name
        assert row["calls_per_s"] > 0, name
        assert 0 < row["p50_ms"] <= row["p99_ms"], name
        if name.startswith(("echo.", "get.net.", "create.net.")):  # calls over loopback: threads hand them on
            assert row["context_switches"] > 0, name
            assert math.isclose(row["switches_per_call"], row["context_switches"] / row["calls"], abs_tol=1e-3), name
        if "system_share" in row:  # the kernel's part of the process CPU, a share of it
            assert 0 <= row["system_share"] <= 1, name
    for name in ("create.net.c32", "create.inproc.c32", "store.put.t16"):
        row = doc["scenarios"][name]
        assert row["commits"] > 0, name
        assert row["requests_per_commit"] > 0, name
    for name in ("create.net.c32", "create.inproc.c32"):
        row = doc["scenarios"][name]
        assert row["commits_after"] > row["commits_before"], name
        assert 0 < row["commit_cpu_seconds"] <= row["commit_seconds"] * 1.05, name  # one thread's CPU within its wall
        assert 0 < row["lock_busy"] <= 1.05, name
        assert row["lock_wall_per_cpu"] >= 0.95, name

    ratios = doc["ratios"]
    assert "get.net.serial / echo.net.serial" in ratios
    assert "get.net.c32 / echo.aio.c32" in ratios
    assert "get.inproc.c32 / get.net.c32" in ratios
    assert "create.net.c32 / create.net.serial" in ratios
    assert "create.inproc.c32 requests_per_commit" in ratios
    assert "create.net.c32 lock_busy" in ratios
    assert "create.net.c32 / echo.aio.c32 (switches_per_call)" in ratios
    assert "create.net.c32 switches_per_call" in ratios
    for name, ratio in ratios.items():
        for key in ("value", "min", "max"):
            assert isinstance(ratio[key], float | int), (name, key)
            assert math.isfinite(ratio[key]) and ratio[key] > 0, (name, key)
        assert ratio["min"] <= ratio["value"] <= ratio["max"], name

    assert "vs_sqlite.lmdb.get / vs_sqlite.sqlite_json.get" in ratios
    assert "vs_sqlite.lmdb.get / vs_sqlite.sqlite_json.get (disk_bytes)" in ratios
    assert "scale.n1000.list_by_agent / scale.n2000.list_by_agent" in ratios
    assert ratios["scale.n2000.list_by_agent daemon_rss_mib"]["value"] > 10
    assert "writes.delete_cascade.c32 / writes.delete_cascade.serial" in ratios
    for row in ENGINE_ROWS[:3]:
        assert doc["scenarios"][f"vs_sqlite.sqlite_json.{row}"]["disk_bytes"] > 0, row

    memory = doc["memory"]
    assert memory["peak_rss_mib"] > 0
    assert memory["traced_creates"]["creates"] > 0
    assert memory["traced_creates"]["peak_kib"] > 0


def test_the_start_up_harness_runs_every_command(tmp_path: Path) -> None:
    """`make bench-cli` ran `get agents` on an empty home, which a command on stored objects now
    refuses (a data directory holding no store): the harness failed where no test looked."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli_startup"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("  ")[0].strip() for line in done.stdout.splitlines()[3:]}
    assert rows >= {
        "python -c pass", "--version", "--help", "kinds", "get agents (in process)", "get agents (daemon)",
        "daemon start to SERVING",
    }, done.stdout  # fmt: skip
