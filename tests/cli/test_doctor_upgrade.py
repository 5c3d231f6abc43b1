"""`stigmer doctor` run with a new release is the upgrade's step (docs/operations.md): it
reconciles the team's database to the kinds installed here, as a daemon's start does. Every
other command never does (a developer's newer plugin stopped the daemons writing its kind), and
doctor was refused with them: exit 1, nothing checked, its advice to use the old release."""

from __future__ import annotations

import json

import psycopg

from stigmer_core.store.postgres_settings import PostgresSettings

from .conftest import Stigmer
from .test_resources import CODER

RECORD = "m/kinds/agent"


def _recorded_version(url: str, version: str | None = None) -> str:
    """The release version the store records for Agent; with ``version``, recorded so first, as
    the daemons of an older release left it."""
    settings = PostgresSettings.from_url(url)
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        table = f'"{settings.schema}".kv'
        [(raw,)] = conn.execute(f"SELECT value FROM {table} WHERE key = %s".encode(), (RECORD.encode(),)).fetchall()
        record = json.loads(bytes(raw))
        if version is not None:
            record["release"]["version"] = version
            conn.execute(
                f"UPDATE {table} SET value = %s WHERE key = %s".encode(), (json.dumps(record).encode(), RECORD.encode())
            )
        return str(record["release"]["version"])


def test_doctor_reconciles_a_shared_store_other_commands_only_read(
    stigmer: Stigmer, stigmer_postgres_store_url: str
) -> None:
    team = {"STIGMER_STORE": stigmer_postgres_store_url}
    stigmer("apply", "-f", "-", input=CODER, env=team)
    ours = _recorded_version(stigmer_postgres_store_url)
    _recorded_version(stigmer_postgres_store_url, "0.0.1")  # the daemons' release, older

    listed = stigmer("get", "agents", env=team)
    assert listed.code == 0 and "coder" in listed.out, listed.err
    assert "by the store's daemons by release" in listed.err and "opened read-only" in listed.err, listed.err
    refused = stigmer("apply", "-f", "-", input=CODER.replace("git-mcp", "git-mcp2"), env=team)
    assert refused.code == 1 and "a command does not reconcile a store daemons share" in refused.err, refused.err
    assert _recorded_version(stigmer_postgres_store_url) == "0.0.1", "no command recorded its own release"

    checked = stigmer("doctor", env=team)
    assert checked.code == 0, checked.err
    assert "every index of" in checked.out, checked.out
    assert _recorded_version(stigmer_postgres_store_url) == ours, "doctor reconciled the store to this release"
