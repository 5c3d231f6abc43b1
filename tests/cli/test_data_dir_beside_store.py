"""`--data-dir` on the command line beside a database store set for the shell or in the config file.

The store and the data directory are separate settings (a team daemon's data directory holds
its lock, socket and key), so a command given `--data-dir ./scratch` with `STIGMER_STORE` set
worked on the database: `org delete` removed the team's org, `import` wrote there and left the
named directory empty. Neither is chosen silently now.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stigmer_core.application import Application

from .conftest import Stigmer
from .test_resources import CODER


def test_a_data_dir_beside_the_environments_database_is_refused_before_anything_is_touched(
    stigmer: Stigmer, tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    scratch, fresh = tmp_path / "scratch", tmp_path / "fresh"
    stigmer.ok("apply", "-f", "-", "--org", "gamma", "--data-dir", str(scratch), input=CODER)
    team = {"STIGMER_STORE": stigmer_postgres_store_url}
    made = stigmer("apply", "-f", "-", "--org", "gamma", input=CODER, env=team)
    assert made.code == 0, made.err
    backup = stigmer.ok("export", "--all", "--data-dir", str(scratch))

    for args, source, holds in (
        (("org", "delete", "gamma", "--yes", "--data-dir", str(scratch)), None, "holds a local store"),
        (("org", "list", "--data-dir", str(scratch)), None, "holds a local store"),
        (("doctor", "--data-dir", str(scratch)), None, "holds a local store"),
        (("import", "--data-dir", str(fresh)), backup, "holds nothing yet"),
        (("export", "--all", "--data-dir", str(scratch)), None, "holds a local store"),
        (("get", "agents", "--org", "gamma", "--data-dir", str(scratch)), None, "holds a local store"),
    ):
        refused = stigmer(*args, input=source, env=team)
        assert refused.code == 2, (args, refused.out, refused.err)
        assert f"--data-dir {args[-1]} {holds}, but STIGMER_STORE (" in refused.err, refused.err
        assert "names a database, which this command would work on instead" in refused.err, refused.err
        assert "run it with STIGMER_STORE unset" in refused.err, refused.err
        assert not refused.out, refused.out

    assert not fresh.exists(), "the import wrote nothing anywhere"
    # the way the refusal names for the database: the data directory in the environment, not the flag
    token = stigmer(
        "token", "create", "--org", "gamma", "--role", "viewer", "--name", "ci",
        env={**team, "STIGMER_DATA_DIR": str(fresh)},
    )  # fmt: skip
    assert token.code == 0 and token.out.startswith("stg_"), token.err
    assert "ci" in stigmer("token", "list", "--org", "gamma", env=team).out
    both = stigmer("org", "list", "-o", "json", env=team)  # the database, named by the environment alone
    assert both.code == 0 and "gamma" in both.out, both.err
    assert stigmer.ok("get", "agents", "--org", "gamma", "-o", "yaml", "--data-dir", str(scratch)).count("slug:") == 1

    # a database daemon's data directory (its key, no local store) goes with the database
    Application.open(stigmer.data_dir, store=stigmer_postgres_store_url).close()  # as a daemon's start makes it
    assert (stigmer.data_dir / "secret.key").exists() and not (stigmer.data_dir / "data.mdb").exists()
    daemons = stigmer("get", "agents", "--org", "gamma", "-o", "yaml", "--data-dir", str(stigmer.data_dir), env=team)
    assert daemons.code == 0 and daemons.out.count("slug:") == 1, daemons.err

    # --store too says the database is meant: the command goes on (a dry run, nothing removed)
    meant = stigmer(
        "org", "delete", "gamma", "--dry-run", "--data-dir", str(scratch), "--store", stigmer_postgres_store_url
    )
    assert meant.code == 0 and "holds a local store" not in meant.err, meant.err
    # and without the environment's store, --data-dir is the local store it names
    local = stigmer("org", "delete", "gamma", "--yes", "--data-dir", str(scratch))
    assert local.code == 0, local.err
    assert "gamma" in stigmer("org", "list", "-o", "json", env=team).out, "the team's org is untouched"


def test_the_config_files_store_is_named_as_such(stigmer: Stigmer, tmp_path: Path) -> None:
    """Refused before the database is dialled: a URL nothing listens on does."""
    url = "postgresql://app:hunter2@127.0.0.1:1/stigmer"
    stigmer.home.mkdir(parents=True, exist_ok=True)
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"store": url}))
    refused = stigmer("get", "agents", "--data-dir", str(tmp_path / "d"))
    assert refused.code == 2, refused.err
    assert "the config file's store (postgresql://app:***@127.0.0.1:1/stigmer?schema=stigmer, in " in refused.err
    assert "hunter2" not in refused.err
    assert "remove store from" in refused.err and "leave --data-dir out" in refused.err, refused.err
    flagged = stigmer("org", "list", "--data-dir", str(tmp_path / "d"))
    assert flagged.code == 2 and "give --store URL too" in flagged.err, flagged.err
