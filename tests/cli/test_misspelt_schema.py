"""A maintenance command given a schema that holds no store refuses it, and makes nothing.

`org delete` and `org list` on a misspelt `schema=` created a new, empty schema, found the org
holding nothing there and said `org 'acme' removed`, exit 0, while the deployment's org stayed;
on LMDB the same mistake (a directory holding no store) was refused already.
"""

from __future__ import annotations

import psycopg

from stigmer_core.store.postgres_settings import PostgresSettings
from stigmer_core.testing.postgres import with_schema

from .conftest import Stigmer
from .test_resources import CODER


def _schema_exists(url: str) -> bool:
    settings = PostgresSettings.from_url(url)
    with psycopg.connect(settings.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (settings.schema,)
        ).fetchone()
    return bool(row and row[0])


def test_org_commands_refuse_a_schema_holding_no_store(stigmer: Stigmer, stigmer_postgres_store_url: str) -> None:
    made = stigmer("apply", "-f", "-", "--org", "acme", input=CODER, env={"STIGMER_STORE": stigmer_postgres_store_url})
    assert made.code == 0, made.err
    deployed = PostgresSettings.from_url(stigmer_postgres_store_url).schema
    typo = with_schema(stigmer_postgres_store_url, deployed + "_typo")
    for args in (
        ("org", "delete", "acme", "--yes"),
        ("org", "delete", "acme", "--dry-run"),
        ("org", "list"),
    ):
        refused = stigmer(*args, "--store", typo)
        assert refused.code == 1, (args, refused.out, refused.err)
        assert f"schema '{deployed}_typo' at " in refused.err and "holds no stigmer store" in refused.err, refused.err
        assert "(this database's stigmer schemas: " in refused.err and f"'{deployed}'" in refused.err, refused.err
        assert "removed" not in refused.out and "holds no objects" not in refused.out, refused.out
    assert not _schema_exists(typo), "nothing was created"
    listed = stigmer("org", "list", "--store", stigmer_postgres_store_url)
    assert listed.code == 0 and "acme" in listed.out, listed.err

    created = stigmer("doctor", "--store", typo)  # the documented way to create a deployment's schema
    try:
        assert created.code == 0, created.err
        assert _schema_exists(typo)
        assert stigmer("org", "list", "--store", typo).code == 0
    finally:
        with psycopg.connect(PostgresSettings.from_url(typo).conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{deployed}_typo" CASCADE'.encode())
