"""A database store set for the shell while this machine's own daemon runs on the data directory.

With `STIGMER_STORE` naming the team's database and the laptop's daemon (its local store)
holding the default data directory, `stigmer import` sent everything to the laptop's daemon
and said it imported. A daemon now records what it serves beside its address, and a command
naming another store is refused rather than sent to it.
"""

from __future__ import annotations

from pathlib import Path

from stigmer_core.application import Application

from .conftest import Stigmer
from .test_resources import CODER


def _agents(url: str, data_dir: Path) -> list[str]:
    with Application.open(data_dir, durable=False, store=url, transient=True) as app, app.store.read() as txn:
        return [key.decode() for key, _ in txn.scan(b"o/agents/")]


def test_a_database_named_beside_the_local_daemon_is_refused_not_sent_to_it(
    stigmer: Stigmer, tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    url = stigmer_postgres_store_url
    local = stigmer.start()  # the laptop's daemon, on its local store
    team = {"STIGMER_STORE": url}
    for args, source in ((("import", "--to-org", "gamma"), CODER), (("get", "agents", "--org", "gamma"), None)):
        refused = stigmer(*args, input=source, env=team)
        assert refused.code == 1, (args, refused.out, refused.err)
        said = refused.err.strip().splitlines()[-1]
        assert said.startswith(f"stigmer: the daemon holding {stigmer.data_dir} (pid "), said
        assert f"listening on {local.address}) serves the local store in {stigmer.data_dir}" in said, said
        assert "but the store named here is the database postgresql://" in said, said
        assert "stop that daemon (`stigmer local stop`)" in said and "leave the database out" in said, said
    # an export of every kind: said once, where each kind said it again (8 lines)
    exported = stigmer("export", "--all", "--org", "gamma", env=team)
    assert exported.code == 1 and not exported.out, exported.err
    lines = exported.err.strip().splitlines()
    assert len(lines) == 1 and "serves the local store in" in lines[0], exported.err
    assert "or --data-dir of one on this machine" in lines[0], lines[0]
    listed = stigmer("get", "agents", "--org", "gamma")
    assert listed.code == 0 and "no agents found" in listed.err and not listed.out, "nothing went to the local store"
    assert _agents(url, tmp_path / "reader") == [], "nor to the database"

    # a daemon serving that database, on its own data directory: the same setting goes through it
    team_dir = tmp_path / "team-daemon"
    stigmer("local", "start", "--address", "127.0.0.1:0", "--data-dir", str(team_dir), env=team)
    stigmer.started.append(team_dir)
    made = stigmer("import", "--to-org", "gamma", "--data-dir", str(team_dir), input=CODER, env=team)
    assert made.code == 0, made.err
    assert len(_agents(url, tmp_path / "reader")) == 1
