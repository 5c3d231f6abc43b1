"""`stigmer org delete` on a team server's database that stops taking writes part way.

It ended `unexpected error: InProcessRpcError: …` (the words kept for bugs) with the org's
tokens and some of its objects gone and nothing said of it; it now says what happened, that
what went stays gone, and that running it again finishes, which it does.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.test_postgres_store import _daemon_role

from .conftest import Stigmer
from .test_resources import CODER

PROD = """\
kind: Environment
metadata: {name: Prod}
spec:
  data:
    REGION: {value: eu}
"""


def _line_with(stream: object, words: str, seconds: float) -> str:
    """The first line of ``stream`` holding ``words``, read within ``seconds``."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if selector.select(timeout=max(deadline - time.monotonic(), 0)):
            line = stream.readline()  # type: ignore[attr-defined]
            if not line:
                break
            seen.append(line)
            if words in line:
                return str(line)
    raise AssertionError(f"no line with {words!r} in {seconds:g} s: {seen}")


def test_an_org_delete_cut_off_by_its_database_says_so_and_a_second_run_finishes(
    stigmer: Stigmer, tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    with _daemon_role(stigmer_postgres_store_url) as (url, admin_conninfo, role):
        team = {"STIGMER_STORE": url}
        made = stigmer("token", "create", "--org", "imp", "--role", "admin", "--name", "a", env=team)
        assert made.code == 0, made.err
        applied = stigmer("apply", "-f", "-", "--org", "imp", input=f"{CODER}---\n{PROD}", env=team)
        assert applied.code == 0, applied.err
        command = [sys.executable, "-m", "stigmer_core.cli", "org", "delete", "imp", "--yes"]
        with subprocess.Popen(
            command, env={**stigmer.env(), **team}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as running:
            try:
                # the tokens are deleted, and it waits for daemons' caches to let go of them: the
                # database turns read-only meanwhile, and the connections it held are cut
                _line_with(running.stderr, "deleted the org's API tokens; waiting", 30)
                with psycopg.connect(admin_conninfo, autocommit=True) as admin:
                    admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
                    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
                out, err = running.communicate(timeout=60)
            finally:
                if running.poll() is None:
                    running.kill()
        assert running.returncode == 1, (out, err)
        assert "unexpected error" not in err and "RpcError" not in err, err
        assert "org 'imp' is partly removed (what was deleted stays deleted, and its events are kept): " in err, err
        assert "run `stigmer org delete imp` again when the store answers to finish" in err, err

        with psycopg.connect(admin_conninfo, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{role}" RESET default_transaction_read_only')
        again = stigmer("org", "delete", "imp", "--yes", env=team)
        assert again.code == 0 and "org 'imp' removed" in again.out, again.err
        assert "imp" not in stigmer("org", "list", "-o", "json", env=team).out
