"""The PostgreSQL engine's tables, created and migrated by the daemon itself.

Every table lives in one schema (``stigmer`` unless the store URL names
another), so several deployments, or every test, can share one database.
``MIGRATIONS`` is the whole history: entry *n* takes a schema from version
*n - 1* to *n*. A daemon applies what is missing at startup, under an
advisory lock, so daemons starting together never race on a migration, and a
daemon finding a schema newer than it knows refuses to start rather than
write rows an older layout does not expect.

Tables::

    kv(key bytea PK, value bytea)            objects and indexes, keys as in store/keys.py
    meta(id = 1, revision, event_bytes,      the global revision (its row lock orders writers),
         writes)                             the bytes of payload the event log holds, and how
                                             many commits changed anything (a reader outside a
                                             transaction compares it between its statements)
    events(revision, seq, payload,           the event log, pruned by retention (store/retention.py)
           committed_at)                     committed_at: the database clock when appended
    schema_version(version, applied_at)      which migrations ran

Version 2 added ``events.committed_at`` and ``meta.event_bytes`` for
retention by age and by bytes. Events a version-1 schema already held are
stamped with the time of the migration (their real age is not known), so
they age out a full retention period after the upgrade at the latest; the
byte total starts from what the log holds then. Version 3 added
``meta.writes``: a commit that writes without an event (a run's key, an index
rebuilt) moves no revision, and single-statement reads must still see it. Every daemon on one schema
must run the same version: stop the old ones before starting a newer one.

``bytea`` compares like ``memcmp``, so key ranges and their order are LMDB's.
"""

from __future__ import annotations

import re

import psycopg

from stigmer_core import errors

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE {s}.kv (key bytea PRIMARY KEY, value bytea NOT NULL)",
        "CREATE TABLE {s}.meta (id integer PRIMARY KEY CHECK (id = 1), revision bigint NOT NULL)",
        "INSERT INTO {s}.meta (id, revision) VALUES (1, 0)",
        "CREATE TABLE {s}.events (revision bigint NOT NULL, seq integer NOT NULL, payload bytea NOT NULL,"
        " PRIMARY KEY (revision, seq))",
    ),
    (
        "ALTER TABLE {s}.events ADD COLUMN committed_at timestamptz NOT NULL DEFAULT now()",
        "ALTER TABLE {s}.meta ADD COLUMN event_bytes bigint NOT NULL DEFAULT 0",
        "UPDATE {s}.meta SET event_bytes = (SELECT coalesce(sum(octet_length(payload)), 0) FROM {s}.events)",
    ),
    ("ALTER TABLE {s}.meta ADD COLUMN writes bigint NOT NULL DEFAULT 0",),
)
VERSION = len(MIGRATIONS)


def check_schema_name(name: str) -> str:
    """Schema names are spliced into SQL, so only plain lower-case identifiers pass."""
    if not SCHEMA_NAME.match(name):
        raise errors.StartupError(
            f"schema name {name!r} is not usable: use lower-case letters, digits and '_' (at most 63)"
        )
    return name


def _current_version(conn: psycopg.Connection[object], schema: str) -> int | None:
    """The schema's version, or None when it has no version table yet."""
    try:
        with conn.transaction():
            row = conn.execute(f'SELECT coalesce(max(version), 0) FROM "{schema}".schema_version').fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return int(row[0]) if row else 0  # type: ignore[index]


def _refuse_newer(schema: str, found: int) -> None:
    if found > VERSION:
        raise errors.StartupError(
            f"schema {schema!r} is at version {found}, newer than this stigmer-core knows ({VERSION}): "
            "upgrade stigmer-core"
        )


def migrate(conn: psycopg.Connection[object], schema: str) -> int:
    """Bring ``schema`` to ``VERSION``; return the version it was at before.

    A schema already at ``VERSION`` is only read: no lock and no DDL, so a daemon
    whose role may only read and write the tables starts (an owner role migrates,
    by starting one daemon with it), and nobody holding the migration's advisory
    lock keeps daemons of a current schema from starting.
    """
    check_schema_name(schema)
    current = _current_version(conn, schema)
    if current is not None and current >= VERSION:
        _refuse_newer(schema, current)
        return current
    lock_key = f"stigmer-schema:{schema}"
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_key,))
    try:
        with conn.transaction():
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version'
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute(f'SELECT coalesce(max(version), 0) FROM "{schema}".schema_version').fetchone()
        found = int(row[0]) if row else 0  # type: ignore[index]
        _refuse_newer(schema, found)
        for version in range(found + 1, VERSION + 1):
            with conn.transaction():
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement.replace("{s}", f'"{schema}"'))
                conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (%s)', (version,))
        return found
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock_key,))
