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
    meta(id = 1, revision, log_bytes,        the global revision (its row lock orders writers),
         event_revisions, compacted,         the bytes of payload and the revisions the event log
         retention_revisions,                holds, the newest revision pruned from it, the
         retention_bytes,                    retention every daemon prunes by (NULL: each its
         retention_seconds,                  own; see PostgresStore), and how many commits
         writes)                             changed anything (a reader outside a transaction
                                             compares it between its statements)
    events(revision, seq, payload,           the event log, pruned by retention (store/retention.py)
           committed_at, part)               committed_at: the database clock when appended;
                                             part: the partition (an org) of the event's revision,
                                             indexed (part, revision, seq)
    event_parts(part PK, revisions, bytes,   per partition: the revisions and bytes it holds in the
                compacted)                   log, and the newest revision pruned from it
    schema_version(version, applied_at)      which migrations ran

and one function, ``prune_events`` (``PRUNE_FUNCTION``), the prune a commit runs.

Version 2 added ``events.committed_at`` and ``meta.event_bytes`` for
retention by age and by bytes. Events a version-1 schema already held are
stamped with the time of the migration (their real age is not known), so
they age out a full retention period after the upgrade at the latest; the
byte total starts from what the log holds then. Version 3 added
``meta.writes``: a commit that writes without an event (a run's key, an index
rebuilt) moves no revision, and single-statement reads must still see it.
Version 4 partitions the log (a fair share of its bounds per org): the
events a version-3 schema held go to the shared partition ``''``, counted
once by the migration, whose watermark starts just below the oldest event
kept (or at the revision, for an empty log), since whatever came before it
was pruned as far as any watch can tell. It renames ``meta.event_bytes`` to
``log_bytes``: a daemon of an older version still running would prune the
log without keeping the shares or the watermarks (a watch resuming across
what it pruned would never be told), and with the column gone its commits
fail instead, loudly, while its reads go on. Every daemon on one schema
must run the same version: stop the old ones before starting a newer one.
One left running finds out (``postgres_version``): what the newer tables break
is refused FAILED_PRECONDITION saying so, and its health turns NOT_SERVING. A
migration that changes what every writer must keep up (as version 4 did) must
make an older daemon's statements fail, since what they still can do goes on.
Version 5 indexes the log by ``(part, revision, seq)`` in place of ``(part,
revision)``, so a watch of some orgs reads their events in order without
passing other orgs' (``ReadTxn.events``); it changes no statement an older
daemon sends.

``bytea`` compares like ``memcmp``, so key ranges and their order are LMDB's.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from stigmer_core import errors

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

PRUNE_FUNCTION = """
CREATE FUNCTION {s}.prune_events(cap bigint, max_revisions bigint, max_bytes bigint, age_floor timestamptz,
    aging boolean, held bigint, total bigint, OUT dropped_events bigint, OUT dropped_revisions bigint,
    OUT dropped_bytes bigint, OUT through bigint, OUT next_revision bigint, OUT next_at timestamptz)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $prune$
DECLARE
    -- The partitions this call dropped from, in the order first touched, and what each holds now;
    -- event_parts is written once, at the end.
    parts text[] := '{}';
    revs bigint[] := '{}';
    sizes bigint[] := '{}';
    marks bigint[] := '{}';
    i integer;
    victim bigint;
    victim_part text COLLATE "C";
    by_bytes boolean := false;
    -- The untouched partition holding the most (NULL: none) and its oldest revision, walked down
    -- event_parts' index: from the top once per rule, then past the one taken last (moved).
    looked boolean := false;
    moved boolean := false;
    next_part text COLLATE "C";
    next_revs bigint;
    next_size bigint;
    next_mark bigint;
    next_victim bigint;
    next_key bigint;
    taken_part text COLLATE "C";
    taken_key bigint;
    top_part text COLLATE "C";
    top_key bigint;
    bound bigint;  -- no touched partition holds more than this (NULL: not known)
    freed_events bigint;
    freed_bytes bigint;
BEGIN
    dropped_events := 0;
    dropped_revisions := 0;
    dropped_bytes := 0;
    through := 0;
    WHILE dropped_events < cap LOOP
        victim := NULL;
        IF aging THEN
            SELECT e.revision, e.part, e.committed_at < age_floor INTO victim, victim_part, aging
                FROM {s}.events AS e WHERE e.revision > through ORDER BY e.revision, e.seq LIMIT 1;
            EXIT WHEN NOT FOUND;
            IF aging THEN
                i := array_position(parts, victim_part::text);
                IF i IS NULL THEN
                    SELECT p.revisions, p.bytes, p.compacted INTO next_revs, next_size, next_mark
                        FROM {s}.event_parts AS p WHERE p.part = victim_part;
                    parts := parts || victim_part::text;
                    revs := revs || next_revs;
                    sizes := sizes || next_size;
                    marks := marks || next_mark;
                    i := cardinality(parts);
                END IF;
            ELSE
                victim := NULL;
            END IF;
        END IF;
        IF victim IS NULL THEN
            IF held - dropped_revisions < max_revisions THEN
                EXIT WHEN total - dropped_bytes <= max_bytes;
                IF NOT by_bytes THEN
                    by_bytes := true;
                    looked := false;
                END IF;
            END IF;
            IF NOT looked OR moved THEN
                IF by_bytes THEN
                    next_part := NULL;
                    IF looked THEN  -- past the one taken last
                        SELECT p.part, p.revisions, p.bytes, p.compacted, ({oldest})
                            INTO next_part, next_revs, next_size, next_mark, next_victim
                            FROM {s}.event_parts AS p WHERE p.bytes = taken_key AND p.part > taken_part
                            AND p.part <> ALL (parts) ORDER BY p.bytes DESC, p.part LIMIT 1;
                    END IF;
                    IF next_part IS NULL THEN
                        SELECT p.part, p.revisions, p.bytes, p.compacted, ({oldest})
                            INTO next_part, next_revs, next_size, next_mark, next_victim
                            FROM {s}.event_parts AS p WHERE p.bytes > 0 AND p.part <> ALL (parts)
                            AND (NOT looked OR p.bytes < taken_key) ORDER BY p.bytes DESC, p.part LIMIT 1;
                    END IF;
                ELSE
                    next_part := NULL;
                    IF looked THEN  -- past the one taken last
                        SELECT p.part, p.revisions, p.bytes, p.compacted, ({oldest})
                            INTO next_part, next_revs, next_size, next_mark, next_victim
                            FROM {s}.event_parts AS p WHERE p.revisions = taken_key AND p.part > taken_part
                            AND p.part <> ALL (parts) ORDER BY p.revisions DESC, p.part LIMIT 1;
                    END IF;
                    IF next_part IS NULL THEN
                        SELECT p.part, p.revisions, p.bytes, p.compacted, ({oldest})
                            INTO next_part, next_revs, next_size, next_mark, next_victim
                            FROM {s}.event_parts AS p WHERE p.revisions > 0 AND p.part <> ALL (parts)
                            AND (NOT looked OR p.revisions < taken_key) ORDER BY p.revisions DESC, p.part LIMIT 1;
                    END IF;
                END IF;
                IF NOT looked THEN
                    bound := CASE WHEN cardinality(parts) = 0 THEN 0 END;
                END IF;
                looked := true;
                moved := false;
            END IF;
            next_key := CASE WHEN by_bytes THEN next_size ELSE next_revs END;
            IF next_part IS NOT NULL AND next_key > bound THEN
                top_part := NULL;  -- the untouched one holds more than any touched: no need to look
            ELSE
                SELECT t.part, t.key INTO top_part, top_key
                    FROM unnest(parts, CASE WHEN by_bytes THEN sizes ELSE revs END) AS t (part, key)
                    WHERE t.key > 0 ORDER BY t.key DESC, t.part COLLATE "C" LIMIT 1;
                bound := coalesce(top_key, 0);
            END IF;
            IF next_part IS NOT NULL
                    AND (top_part IS NULL OR next_key > top_key OR (next_key = top_key AND next_part < top_part)) THEN
                victim_part := next_part;
                victim := next_victim;
                parts := parts || next_part::text;
                revs := revs || next_revs;
                sizes := sizes || next_size;
                marks := marks || next_mark;
                i := cardinality(parts);
                taken_part := next_part;
                taken_key := next_key;
                moved := true;
            ELSIF top_part IS NOT NULL THEN
                victim_part := top_part;
                i := array_position(parts, top_part::text);
                SELECT e.revision INTO victim FROM {s}.events AS e
                    WHERE e.part = victim_part AND e.revision > marks[i] ORDER BY e.part, e.revision LIMIT 1;
            END IF;
            EXIT WHEN victim IS NULL;
        END IF;
        WITH gone AS (DELETE FROM {s}.events AS e WHERE e.revision = victim RETURNING octet_length(e.payload) AS len)
            SELECT count(*), coalesce(sum(gone.len), 0) INTO freed_events, freed_bytes FROM gone;
        revs[i] := revs[i] - 1;
        sizes[i] := sizes[i] - freed_bytes;
        marks[i] := greatest(marks[i], victim);
        bound := greatest(bound, CASE WHEN by_bytes THEN sizes[i] ELSE revs[i] END);
        dropped_events := dropped_events + freed_events;
        dropped_revisions := dropped_revisions + 1;
        dropped_bytes := dropped_bytes + freed_bytes;
        through := greatest(through, victim);
    END LOOP;
    FOR i IN 1 .. cardinality(parts) LOOP
        UPDATE {s}.event_parts AS p SET revisions = revs[i], bytes = sizes[i], compacted = marks[i]
            WHERE p.part = parts[i];
    END LOOP;
    SELECT e.revision, e.committed_at INTO next_revision, next_at FROM {s}.events AS e ORDER BY e.revision, e.seq LIMIT 1;
END
$prune$
""".replace(
    "{oldest}",
    "SELECT e.revision FROM {s}.events AS e WHERE e.part = p.part AND e.revision > p.compacted"
    " ORDER BY e.part, e.revision LIMIT 1",
)
"""The event log's prune (store/retention.py), run by the commit that appends a revision's first
event: each turn drops one whole revision, the oldest of the log while it is past the age
bound, else the oldest of the partition holding the most revisions (then bytes) while the log
is past that bound, smallest partition name first on a tie, until ``cap`` events went. It runs
in the database because every turn's pick depends on the one before: one round trip for up to
``cap`` revisions instead of one per revision. ``held`` and ``total`` are the revisions and
bytes the log holds, which the caller keeps (``meta`` has them as of the last commit); it
returns what went, the newest revision that went (0: none) and the oldest event left.
``aging`` false says the oldest event is known to be within the age bound (it can only get newer).

Each turn's work is a few index probes and one DELETE, however many partitions there are: the
partitions already dropped from are kept in arrays (``event_parts`` is written once, at the end:
rows rewritten on every turn would leave versions that every later pick in the same transaction
walks past), and the untouched partition holding the most is read once and then walked down
``event_parts``' index. The arrays are looked through (in memory) only when one of the touched
partitions may hold as much as that one (``bound``). A partition loses its oldest revisions first,
by age too, so what it held up to its watermark is gone, and its oldest is looked up past it,
never through the rows this transaction deleted. Its statements run on generic plans: each is an
index probe whatever the figures, and planning them afresh on every call cost more than running
them (about half of a call that drops one revision)."""

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
    (
        # First, so this takes meta's lock before events' as every writer does (no deadlock with an
        # older daemon's commit), and so an older daemon still running can no longer commit: its
        # statements name event_bytes, and a commit of one would prune without keeping the shares.
        "ALTER TABLE {s}.meta RENAME COLUMN event_bytes TO log_bytes",
        "ALTER TABLE {s}.events ADD COLUMN part text COLLATE \"C\" NOT NULL DEFAULT ''",
        "CREATE INDEX events_by_part ON {s}.events (part, revision)",
        'CREATE TABLE {s}.event_parts (part text COLLATE "C" PRIMARY KEY, revisions bigint NOT NULL,'
        " bytes bigint NOT NULL, compacted bigint NOT NULL)",
        "CREATE INDEX event_parts_by_revisions ON {s}.event_parts (revisions DESC, part)",
        "CREATE INDEX event_parts_by_bytes ON {s}.event_parts (bytes DESC, part)",
        "ALTER TABLE {s}.meta ADD COLUMN event_revisions bigint NOT NULL DEFAULT 0,"
        " ADD COLUMN compacted bigint NOT NULL DEFAULT 0, ADD COLUMN retention_revisions bigint,"
        " ADD COLUMN retention_bytes bigint, ADD COLUMN retention_seconds bigint",
        "UPDATE {s}.meta SET event_revisions = (SELECT count(DISTINCT revision) FROM {s}.events),"
        " compacted = coalesce((SELECT min(revision) - 1 FROM {s}.events), revision)",
        "INSERT INTO {s}.event_parts (part, revisions, bytes, compacted)"
        " SELECT '', event_revisions, log_bytes, compacted FROM {s}.meta",
        PRUNE_FUNCTION,
    ),
    (
        # A page of some partitions' events walks each one's index in the order it is read: with
        # seq left out, the planner walked the whole log's key instead, passing every other org's.
        "CREATE INDEX events_by_part_seq ON {s}.events (part, revision, seq)",
        "DROP INDEX {s}.events_by_part",
    ),
)
VERSION = len(MIGRATIONS)


def check_schema_name(name: str) -> str:
    """Schema names are spliced into SQL, so only plain lower-case identifiers pass."""
    if not SCHEMA_NAME.match(name):
        raise errors.StartupError(
            f"schema name {name!r} is not usable: use lower-case letters, digits and '_' (at most 63)"
        )
    return name


def read_version(conn: psycopg.Connection[object], schema: str) -> int | None:
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


def other_schemas(conn: psycopg.Connection[object], schema: str) -> list[str]:
    """The database's other schemas holding this engine's tables (that the role can see): what a
    daemon that just made a new schema names, since a misspelt ``schema=`` makes one."""
    rows = conn.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'schema_version'"
        " AND table_schema <> %s ORDER BY table_schema",
        (schema,),
    ).fetchall()
    return [str(row[0]) for row in rows]  # type: ignore[index]


TABLE_PRIVILEGES = {
    "kv": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "meta": ("SELECT", "UPDATE"),
    "events": ("SELECT", "INSERT", "DELETE"),
    "event_parts": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "schema_version": ("SELECT",),
}
"""What a daemon's statements do to each table: what its role must be granted on it."""


def missing_privileges(conn: psycopg.Connection[object], schema: str) -> list[str]:
    """What the connection's role lacks of what a daemon serving ``schema`` uses, in the words of
    a GRANT (``INSERT on events``); empty when it has it all. One round trip, read from the
    catalogs: a revoked grant was found only when a call needed it (EXECUTE on ``prune_events``,
    at the first prune, once the event log reached its bound: weeks after the start)."""
    wanted = [(table, privilege) for table, privileges in TABLE_PRIVILEGES.items() for privilege in privileges]
    row = conn.execute(
        "SELECT has_schema_privilege(n.oid, 'USAGE'),"
        " (SELECT coalesce(bool_and(has_function_privilege(p.oid, 'EXECUTE')), false) FROM pg_proc p"
        "   WHERE p.pronamespace = n.oid AND p.proname = 'prune_events'),"
        " (SELECT array_agg(w.priv || ' on ' || w.tab ORDER BY w.ord) FROM unnest(%s::text[], %s::text[])"
        "   WITH ORDINALITY AS w(tab, priv, ord) JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.tab"
        "   WHERE NOT has_table_privilege(c.oid, w.priv))"
        " FROM pg_namespace n WHERE n.nspname = %s",
        ([table for table, _ in wanted], [privilege for _, privilege in wanted], schema),
    ).fetchone()
    if row is None:
        return []
    found: tuple[Any, ...] = tuple(row)  # type: ignore[arg-type]
    usage, execute, tables = bool(found[0]), bool(found[1]), list(found[2] or [])
    missing = [] if usage else ["USAGE on the schema"]
    missing += [str(each) for each in tables]
    if not execute:
        missing.append("EXECUTE on its function prune_events")
    return missing


def foreign_prune(conn: psycopg.Connection[object], schema: str) -> str | None:
    """The schema ``schema``'s function ``prune_events`` works on when it is another one (the
    schema was renamed, ``ALTER SCHEMA … RENAME``: the function's body names the tables with the
    schema it was made in, so it would prune that schema's event log), else None."""
    row = conn.execute(
        "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname = 'prune_events' LIMIT 1",
        (schema,),
    ).fetchone()
    if row is None:
        return None
    body = str(row[0])  # type: ignore[index]
    if f'"{schema}".events' in body:
        return None
    named = re.search(r'"((?:[^"]|"")+)"\.events', body)
    return named.group(1).replace('""', '"') if named else "another schema"


def migrate(conn: psycopg.Connection[object], schema: str) -> int:
    """Bring ``schema`` to ``VERSION``; return the version it was at before.

    A schema already at ``VERSION`` is only read: no lock and no DDL, so a daemon
    whose role may only read and write the tables starts (an owner role migrates,
    by starting one daemon with it), and nobody holding the migration's advisory
    lock keeps daemons of a current schema from starting.
    """
    check_schema_name(schema)
    current = read_version(conn, schema)
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
