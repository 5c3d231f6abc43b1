"""``python -m bench.postgres --quick`` runs end to end against the session's PostgreSQL.

Only the shape of the results is checked, never a speed: timings on a shared
machine are not something a test can assert without flaking. That every
watched create arrived is checked: it is what the watch latency row measures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench import h2load

ROOT = Path(__file__).resolve().parent.parent

ROWS = {
    "raw.create.serial",
    "raw.create.t32",
    "raw.get.t32",
    "raw.page100.serial",
    "create.1d.serial",
    "create.1d.c32",
    "create.2d.c32",
    "get.1d.c32",
    "get.2d.c32",
    "list100.1d.serial",
    "list100.1d.c32",
    "list100.2d.c32",
    "watch.event.cross_daemon",
    "watch.wake.cross_daemon",
    "lmdb.create.c32",
    "lmdb.get.c32",
    "lmdb.list100.serial",
    "lmdb.watch.event",
}
WATCH_SAMPLES = 50  # the quick run's count
H2LOAD_ROWS = {"h2load.get.1d", "h2load.get.2d"}
"""Rows from nghttp2's h2load: .ci/run installs it; elsewhere the run leaves them out and says so."""


def test_quick_run_reports_every_row_and_the_watch_latency_across_daemons(
    tmp_path: Path, stigmer_postgres_url: str
) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.postgres", "--quick", "--url", stigmer_postgres_url, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "watch event, created on B, arrived on A's stream" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    with_h2load = h2load.available() or bool(os.environ.get("CI"))
    assert set(doc["rows"]) == ROWS | (H2LOAD_ROWS if with_h2load else set())
    if with_h2load:
        assert "2 daemons / 1 daemon" in done.stdout
        assert 0 < doc["rows"]["h2load.get.1d"]["busy_cores"] <= os.cpu_count(), "the machine's load was measured"
    else:
        assert "install nghttp2-client" in done.stdout
    for name, row in doc["rows"].items():
        assert row["calls"] > 0, name
        assert 0 <= row["p50_ms"] <= row["p99_ms"], name
    assert doc["rows"]["watch.event.cross_daemon"]["calls"] == WATCH_SAMPLES, "a watched create never arrived"
    for name, value in doc["ratios"].items():
        assert math.isfinite(value) and value > 0, name
    trips = doc["create_round_trips"]
    # the exact figure is tests/test_postgres_round_trips.py's; here, that the run counted at all
    assert trips["round_trips"] >= 1, f"the counter saw none of psycopg's calls: {trips}"
    assert trips["statements"] >= trips["round_trips"], f"a round trip carries a statement: {trips}"
    assert "round trips" in done.stdout
