"""The PostgreSQL engine: the same store, shared by several daemons.

Writers are ordered by one row: a write transaction starts by locking the
``meta`` row that holds the global revision (``SELECT ... FOR UPDATE``), so
writers of every daemon run one at a time, each revision is handed out in
commit order with no gap, READ COMMITTED reads see every earlier write, and
``fn`` is not run again for a conflict. Sequences would not do: their values are not handed out in
commit order, so a watcher could pass a revision that commits later.
Readers take REPEATABLE READ, READ ONLY snapshots and never wait for writers;
a restartable reader (``read(restartable=True)``, what a unary read rpc uses)
answers its first queries as single statements instead, which makes a get
one round trip (see ``Reader``).

Group commit, as in the LMDB engine: the first caller to find no commit in
progress in this daemon leads, runs every queued caller's ``fn`` in one
transaction and commits once, so many callers share one lock hold and one
durable commit. A caller whose ``fn`` raises must be rolled back alone: the
batch is then rolled back and run again with each caller under a SAVEPOINT
of its own (one round trip more per caller). Writes seldom fail there (the
pipeline checks a request before it queues), so batches seldom pay for
savepoints, and a lone caller never does.

The event log is kept within ``EventRetention``'s three bounds (revisions,
bytes, age), as LMDB keeps it, shared fairly between partitions (orgs): past
the revision or byte bound, the partition holding the most loses its oldest
revision first. What the common commit needs to know (the revisions and bytes
the log holds, kept in ``meta``, and the oldest event's revision and time)
comes back with the revision-lock statement; the new totals are written with
the revision at commit, and the partitions' counts (``event_parts``) in one
more statement of the same round trip, so a commit with nothing to prune pays
no extra round trip. One that has something to prune calls the schema's
``prune_events`` in the round trip before the one that appends its first event: at most
about ``PRUNE_PER_COMMIT`` events, always whole revisions, each found along
an index.

A commit that allocated a revision sends ``NOTIFY`` with the revision (never
the object: payloads are capped at 8,000 bytes) inside its transaction, so
the notice goes out exactly when the commit is visible. Every daemon keeps a
dedicated listener connection (a connection waiting on LISTEN cannot serve
queries) that, woken by notices, reads the revision (one read per burst of
them; a payload is never trusted, since any role may NOTIFY) and wakes
``wait_for_revision``; a burst of this daemon's own commits' notices needs no
read, since those commits wake waiters themselves (``_known``); after reconnecting it reads the revision once, so a
commit made while it was away is not missed.

Faults: a database that is down, restarting or too slow answers
``errors.Unavailable`` (UNAVAILABLE) saying so; the pool drops broken
connections and opens new ones by itself. A call that waits out
``pool_timeout`` while every connection is lent to calls still running is told
the pool is busy, not that the database is unreachable (``_timed_out``). A server that stops answering
without closing the connection (which TCP does not notice) is given up after
``answer_timeout_ms``, and the calls already waiting on it sooner, once the listener
finds it not answering (``health_timeout_ms``; see ``postgres_connection``). A write is acknowledged only after
its COMMIT returned; a connection lost during COMMIT is reported as
unavailable with the outcome unknown, never as success.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from stigmer_core import errors
from stigmer_core.store import postgres_locks
from stigmer_core.store.group_commit import GroupCommit, Pending
from stigmer_core.store.postgres_connection import NoAnswer, Openings, Waits, answered_within, bounded_class, within
from stigmer_core.store.postgres_faults import (
    Retry,
    close_on_purpose,
    commit_unknown,
    drop_after_pipeline,
    lost,
    translate,
    unusable,
    why_unknown,
)
from stigmer_core.store.postgres_reader import Reader, within_bytes
from stigmer_core.store.postgres_schema import VERSION as SCHEMA_VERSION
from stigmer_core.store.postgres_schema import foreign_prune, migrate, missing_privileges, other_schemas, read_version
from stigmer_core.store.postgres_settings import PostgresSettings as PostgresSettings
from stigmer_core.store.postgres_settings import redact_url as redact_url
from stigmer_core.store.postgres_use import held_alone, in_use, take_share, take_sole
from stigmer_core.store.postgres_version import SchemaWatch, schema_shaped
from stigmer_core.store.postgres_writer import Log, Writer
from stigmer_core.store.protocol import EventLogStats, Handed, PoolStats, SchemaVersions, StoreUse
from stigmer_core.store.retention import EventRetention

T = TypeVar("T")
log = logging.getLogger(__name__)


LOOSE_QUERIES = 2
"""Queries a restartable read answers outside a transaction: a get, or a slug then its object."""
LISTEN_SECONDS = 5.0
"""Silence after which the listener reads the revision itself, in case its connection stopped delivering."""
UNREACHABLE_POLL_SECONDS = 1.0
"""While the database is marked unreachable, how often the listener reads the revision: health
turns SERVING again within about this long of its first answer."""
_CONFLICT_ATTEMPTS = 5


class _Pool(psycopg_pool.ConnectionPool[psycopg.Connection[Any]]):
    """The pool, counting the connections it has lent out: when every one is out, a caller that
    waited ``pool_timeout`` in vain met a saturated pool, not an unreachable database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lent_lock = threading.Lock()
        self.lent = 0
        super().__init__(*args, **kwargs)

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        conn = super().getconn(timeout)
        with self._lent_lock:
            self.lent += 1
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        with self._lent_lock:
            self.lent -= 1
        super().putconn(conn)


def _usable_retention(recorded: tuple[object, ...]) -> EventRetention:
    """What a schema records, as bounds: the defaults for any it does not hold, or holds unusable."""
    try:
        if all(value is not None for value in recorded):
            return EventRetention(*(int(value) for value in recorded))  # type: ignore[call-overload]
    except ValueError:
        pass
    return EventRetention()


def _described(bounds: tuple[object, ...]) -> str:
    revisions, size, seconds = bounds
    return f"{revisions} revisions, {size} bytes, {seconds} s"


REFUSED_LOGIN = frozenset({"28P01", "28000", "3D000"})
_REFUSED_LOGIN_WORDS = re.compile(
    r'password authentication failed|(?:database|role) "[^"]*" does not exist|pg_hba\.conf (?:entry|rejects)'
)


def refused_login(exc: psycopg.OperationalError) -> bool:
    """A wrong password, a role the server does not let in, a database that does not exist: answers
    of a server that is up, which no wait at start (``--store-wait``) changes, so the start stops at
    once instead of retrying them for half a minute. libpq gives a refused connection no SQLSTATE,
    only the server's words (in English unless its lc_messages says otherwise: then it is waited
    for, as before)."""
    return exc.sqlstate in REFUSED_LOGIN or _REFUSED_LOGIN_WORDS.search(str(exc)) is not None


def with_budget_hint(said: str) -> str:
    """libpq's refusal of a connection for the database's or the role's connection limit, with
    what to change: said alone, an operator looked for an unreachable database."""
    if any(words in said for words in ("remaining connection slots", "too many clients", "too many connections")):
        return said + (
            " (the database holds as many connections as it allows this role or in all: every daemon's "
            "pool_max + 1 and each command's connections must fit; lower pool_max in the store URLs, or "
            "raise max_connections or the role's CONNECTION LIMIT)"
        )
    return said


class PostgresStore:
    """Store in the tables of one schema of a PostgreSQL database (see ``PostgresSettings``)."""

    shared_by_daemons = True
    """Other daemons write to it too (``SharedByDaemons``)."""

    def __init__(
        self,
        url: str,
        *,
        durable: bool = True,
        retention: EventRetention | None = None,
        event_retention: int | None = None,
        settings: PostgresSettings | None = None,
        use: StoreUse = StoreUse.NONE,
        existing: bool = False,
    ) -> None:
        """``retention`` bounds the event log; ``event_retention`` alone sets its revision count.
        ``use``: how this application holds the database beside others (``postgres_use``).
        ``existing``: refuse a schema that holds no store rather than create it (a command that
        works on a deployment: on a misspelt ``schema=`` it made a new, empty one and found
        nothing to delete, list or check there, and said so as if it had).

        The schema holds the bounds every daemon on it prunes by (``meta.retention_*``): a
        store given bounds records them, and each commit prunes by what is recorded when it
        takes the revision lock, so daemons started with different settings never prune the
        one log by different rules (the one started last sets them, and says so in its log).
        A store given none follows what is recorded (the defaults while nothing is).
        """
        self.settings = settings or PostgresSettings.from_url(url)
        self.url = redact_url(url)
        given = retention is not None or event_retention is not None
        self.retention = (retention or EventRetention(chosen=frozenset())).with_revisions(event_retention)
        """The bounds the last commit pruned by (the schema's, once a commit has read them)."""
        self._own_retention = self.retention
        self._recorded: tuple[object, ...] = ()
        s = f'"{self.settings.schema}"'
        self.schema = self.settings.schema
        self.channel = f"stigmer_{self.schema}"[:63]
        self._sql_revision = f"SELECT revision FROM {s}.meta WHERE id = 1".encode()
        # The listener's read: the schema's version rides along, so a daemon left running while a
        # newer release migrated the schema learns of it without a statement failing first.
        # The retention recorded rides along too: another daemon started with other bounds records
        # them, and this one's gauges of them (read at each scrape) follow at its next read.
        self._sql_watch = (
            f"SELECT revision, (SELECT max(version) FROM {s}.schema_version), event_revisions, log_bytes, compacted,"
            f" retention_revisions, retention_bytes, retention_seconds FROM {s}.meta WHERE id = 1"
        ).encode()
        # the quiet spell's read also asks for the lock a write takes (``postgres_locks``)
        self._sql_tables_free = postgres_locks.probe_sql(self.schema, self.settings.health_seconds / 4)
        self._sql_lock_holders = postgres_locks.holders_sql(self.schema)
        self._sql_blockers = postgres_locks.blockers_sql(self.schema, self.settings.health_seconds)
        self._sql_lock_revision = (
            f"SELECT revision, log_bytes, event_revisions, compacted,"
            f" (SELECT revision FROM {s}.events ORDER BY revision, seq LIMIT 1),"
            f" (SELECT committed_at FROM {s}.events ORDER BY revision, seq LIMIT 1),"
            " clock_timestamp(), retention_revisions, retention_bytes, retention_seconds"
            f" FROM {s}.meta WHERE id = 1 FOR UPDATE"
        ).encode()
        self._begin_rehearsal = b"BEGIN; " + self._sql_lock_revision.removesuffix(b" FOR UPDATE")
        """A dry run's first statement: what a write's reads, without the lock (``rehearse``)."""
        self._sql_token = f"SELECT revision, writes FROM {s}.meta WHERE id = 1".encode()
        self._sql_set_revision = (
            f"UPDATE {s}.meta SET revision = %s, log_bytes = %s, event_revisions = %s, compacted = %s,"
            " writes = writes + 1 WHERE id = 1"
        ).encode()
        self._sql_get = f"SELECT value FROM {s}.kv WHERE key = %s".encode()
        # A join to the keys, not ``key = ANY(...)``: for that the planner weighs the array as a
        # whole and takes a sequential scan of kv when its estimate says so (it did at 3,000 rows,
        # and a prepared statement's generic plan may keep it), where a lookup per key is an index
        # probe each whatever the table holds.
        wanted = f"unnest(%b::bytea[]) AS wanted(key) JOIN {s}.kv AS kv ON kv.key = wanted.key"
        self._sql_get_many = f"SELECT kv.key, kv.value FROM {wanted}".encode()
        self._sql_get_many_loose = (
            f"SELECT m.revision, m.writes, found.key, found.value FROM {s}.meta AS m"
            f" LEFT JOIN LATERAL (SELECT kv.key, kv.value FROM {wanted}) AS found ON true WHERE m.id = 1"
        ).encode()
        self._sql_get_loose = (
            f"SELECT m.revision, m.writes, kv.value FROM {s}.meta AS m"
            f" LEFT JOIN {s}.kv AS kv ON kv.key = %s WHERE m.id = 1"
        ).encode()
        # one index range per prefix (ordinality keeps the caller's order), each with its own LIMIT
        # (NULL: all), so a bounded read of one prefix never reads the rest of its range
        prefixes = (
            f"unnest(%b::bytea[], %b::bytea[]) WITH ORDINALITY AS r(lo, hi, n) CROSS JOIN LATERAL"
            f" (SELECT key, {{}} FROM {s}.kv WHERE key >= r.lo AND key < r.hi ORDER BY key {{}}) AS k"
        )
        self._sql_scan_many = (
            f"SELECT k.key, k.value FROM {prefixes.format('value', 'LIMIT %s')} ORDER BY r.n, k.key"
        ).encode()
        self._sql_sizes_under = (
            f"SELECT k.key, k.size FROM {prefixes.format('octet_length(value) AS size', '')} ORDER BY r.n, k.key"
        ).encode()
        ranges = {
            "scan_ge": "key >= %s AND key < %s",
            "scan_gt": "key > %s AND key < %s",
            "scan_from_ge": "key >= %s",
            "scan_from_gt": "key > %s",
        }
        self._sql_scans: dict[str, tuple[bytes, bytes]] = {}
        for name, where in ranges.items():
            strict = within_bytes(f"SELECT key, value FROM {s}.kv WHERE {where} ORDER BY key LIMIT %s", "key", "value")
            loose = (
                f"SELECT m.revision, m.writes, page.key, page.value FROM {s}.meta AS m"
                f" LEFT JOIN LATERAL ({strict}) AS page ON true WHERE m.id = 1 ORDER BY page.key"
            )
            self._sql_scans[name] = (loose.encode(), strict.encode())
        self._sql_put = (
            f"INSERT INTO {s}.kv (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).encode()
        self._sql_put_many = (
            f"INSERT INTO {s}.kv (key, value) SELECT * FROM unnest(%b::bytea[], %b::bytea[])"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).encode()
        events_from_arrays = (
            f"INSERT INTO {s}.events (revision, seq, payload, committed_at, part)"
            " SELECT r, q, p, clock_timestamp(), t FROM unnest(%s::bigint[], %s::integer[], %b::bytea[], %s::text[])"
            " AS u(r, q, p, t)"
        )
        self._sql_append_many = events_from_arrays.encode()
        self._sql_put_and_append = (
            f"WITH put AS (INSERT INTO {s}.kv (key, value) SELECT * FROM unnest(%b::bytea[], %b::bytea[])"
            f" ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value) {events_from_arrays}"
        ).encode()
        self._sql_delete = f"DELETE FROM {s}.kv WHERE key = %s".encode()
        self._sql_delete_many = f"DELETE FROM {s}.kv WHERE key = ANY(%b::bytea[])".encode()
        self._sql_events = within_bytes(
            f"SELECT revision, seq, payload FROM {s}.events WHERE revision >= %s AND (revision, seq) > (%s, %s)"
            " ORDER BY revision, seq LIMIT %s",
            "revision, seq",
            "payload",
        ).encode()
        self._sql_part_events: dict[int, bytes] = {}
        self._sql_oldest_event = f"SELECT min(revision) FROM {s}.events".encode()
        self._sql_compacted = (
            f"SELECT coalesce(max(compacted), 0) FROM {s}.event_parts WHERE part = '' OR part = ANY(%s::text[])"
        ).encode()
        self._sql_compacted_all = f"SELECT compacted FROM {s}.meta WHERE id = 1".encode()
        self._sql_append = (
            f"INSERT INTO {s}.events (revision, seq, payload, committed_at, part)"
            " VALUES (%s, %s, %s, clock_timestamp(), %s)"
        ).encode()
        # A revision naming a second partition moves to the shared one, its earlier events with it.
        self._sql_share_and_append = (
            f"WITH shared AS (UPDATE {s}.events SET part = '' WHERE revision = %s)"
            f" INSERT INTO {s}.events (revision, seq, payload, committed_at, part)"
            " VALUES (%s, %s, %s, clock_timestamp(), '')"
        ).encode()
        # A partition's revisions dropped whole, the newest of them its watermark (its counts follow
        # at commit, with the others').
        self._sql_forget_part = (
            f"WITH gone AS (DELETE FROM {s}.events WHERE part = %s RETURNING revision, octet_length(payload) AS size),"
            " counted AS (SELECT count(DISTINCT revision) AS revisions, coalesce(sum(size), 0) AS size,"
            " coalesce(max(revision), 0) AS newest FROM gone),"
            # the watermark goes to now (as LMDB's): the org's events in the shared partition stay
            f" marked AS (INSERT INTO {s}.event_parts AS p (part, revisions, bytes, compacted)"
            " VALUES (%s, 0, 0, greatest((SELECT newest FROM counted), %s))"
            " ON CONFLICT (part) DO UPDATE SET compacted = greatest(p.compacted, EXCLUDED.compacted))"
            " SELECT revisions, size, newest FROM counted"
        ).encode()
        # What the partitions' appends added since their counts were last written, one row each.
        self._sql_count_parts = (
            f"INSERT INTO {s}.event_parts AS p (part, revisions, bytes, compacted)"
            " SELECT d.part, d.revisions, d.bytes, 0"
            " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS d (part, revisions, bytes)"
            " ON CONFLICT (part) DO UPDATE SET revisions = p.revisions + EXCLUDED.revisions,"
            " bytes = p.bytes + EXCLUDED.bytes"
        ).encode()
        self._sql_prune = (
            "SELECT dropped_events, dropped_revisions, dropped_bytes, through, next_revision, next_at"
            f" FROM {s}.prune_events(%(cap)s, %(max_revisions)s, %(max_bytes)s, %(age_floor)s, %(aging)s,"
            " %(held)s, %(total)s)"
        ).encode()
        # A lock_timeout set for the role or database would cut the wait for the revision lock
        # short of statement_timeout_ms (every write takes it): writes failed while another daemon
        # committed. The store's own settings bound its sessions, whatever is set around them.
        # Every statement is a key lookup or an ordered range read with a LIMIT, for which a bitmap
        # scan reads and sorts a whole range to keep one page: the planner takes one when it expects
        # few rows, and a range between two histogram bounds is expected to hold a few however many
        # it holds (a page of a label shared by 10,000 agents read 10,022 rows). Off, a page walks
        # the primary key and stops.
        options = (
            f"-c statement_timeout={self.settings.statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={self.settings.idle_ms}"
            " -c lock_timeout=0 -c enable_bitmapscan=off"
        )
        if not durable:
            options += " -c synchronous_commit=off"
        # The URL's own `options` (libpq's) come first, so the store's settings above win a clash:
        # given as a keyword, the store's replaced them whole (a `-c search_path=...` was dropped).
        options = f"{conninfo_to_dict(self.settings.conninfo).get('options', '')} {options}".strip()
        self._openings = Openings()
        self._waits = Waits()
        """The pool's round trips under way: given up once the database is found not answering."""
        self._connection_class = bounded_class(self.settings.answer_seconds, self._openings, self._waits)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": options,
        }
        self.use = use
        try:
            conn = self._connection_class.connect(self.settings.conninfo, **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from exc
        try:
            if existing and read_version(conn, self.schema) is None:
                raise errors.StartupError(self._no_schema(conn))
            before = migrate(conn, self.schema)
            if before == 0:
                self._tell_new_schema(conn)
            elif before < SCHEMA_VERSION:  # an upgrade's step the operator looks for (docs/operations.md)
                log.warning(
                    "migrated schema %r at %s from version %d to %d (this release's)",
                    self.schema, self.url, before, SCHEMA_VERSION,
                )  # fmt: skip
            if use is not StoreUse.NONE:  # a daemon: found at its start, not weeks later at a write
                self._refuse_missing_privileges(conn)
            self._tell_connection_budget(conn)
            if not self._take_use(conn):
                raise errors.DatabaseUnreachable(held_alone(self.schema))  # waited for, as a database down
            row = conn.execute(self._sql_revision).fetchone()
            self._settle_retention(conn, record=given)
        except psycopg.OperationalError as exc:
            conn.close()
            raise self._unreachable(exc) from exc
        except psycopg.Error as exc:  # e.g. a role that may not create the schema
            hint = ""
            if isinstance(exc, pg_errors.InsufficientPrivilege):  # a schema there already, or one to make
                misspelt = self._misspelt(conn)
                hint = (
                    f"{misspelt}; a daemon's role needs USAGE on the schema and SELECT, INSERT, UPDATE and DELETE "
                    "on its tables (docs/operations.md, The database and its roles), and creating or migrating it "
                    "(a new schema, or one of an older release) needs the schema's owner: `stigmer doctor` with the "
                    "owner role's URL does it"
                )
            conn.close()
            raise errors.StartupError(
                f"cannot create or migrate schema {self.schema!r} at {self.url}: {str(exc).strip()}{hint}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._first_listen: Any = conn
        """The listener's first connection: the one the store opened with, which holds its use
        lock already, so no key rotation finds a daemon's store free before its listener runs."""
        self._revision = int(row[0]) if row else 0
        self._revision_cond = threading.Condition(threading.Lock())
        self._followers: tuple[Handed, ...] = ()
        self._begin_write: tuple[tuple[bytes, ...], bytes] = ((), b"BEGIN; " + self._sql_lock_revision)
        """The statement that begins a write, and the keys it reads ahead (``read_ahead``): one
        attribute, so a write never pairs one with the other's predecessor."""
        self._committing: int | None = None
        """The revision before the batch whose COMMIT is in flight: ``wait_for_revision`` answers
        no further until its events were handed over, though the listener may see it first."""
        self._announcing = 0
        """The revision this daemon's commit in flight (or its last) notifies: the listener needs no
        read for its notice, since the committing thread advances to it itself (``_known``). 0 once a
        commit failed: another daemon may commit that revision. A commit whose outcome is unknown (its
        connection lost at COMMIT) may have been notified and skipped: ``_recheck`` reads for it."""
        self._rechecking = False
        self._recheck_again = False
        self._log_seen = (0, 0, 0, 0)
        """(revision, revisions held, bytes, compacted) of the event log, as this daemon's last
        commit wrote them or its listener last read them, whichever is newer (``event_log_stats``)."""
        self._reachable = True
        self._why_not = ""
        """Why the store is not reachable, when it is a lock on its tables (``postgres_locks``)."""
        self._serving = True
        """What the health followers were last told: reachable, on a schema this code knows."""
        self._version = SchemaWatch(self.schema, self._version_connection, self._report)
        self._reachability: list[Callable[[bool], None]] = []
        self._reachability_lock = threading.Lock()
        self._writes = GroupCommit(self._commit_batch, self.settings.max_batch)
        self._stop = threading.Event()
        self.commits = 0
        self._pool = _Pool(
            self.settings.conninfo,
            connection_class=self._connection_class,
            kwargs=self._connect_kwargs,
            min_size=self.settings.pool_min,
            max_size=self.settings.pool_max,
            timeout=self.settings.pool_timeout,
            reconnect_timeout=max(self.settings.pool_timeout * 2, 10.0),
            name=f"stigmer-{self.schema}",
            open=False,
        )
        self._pool.open(wait=False)
        self._listener = threading.Thread(target=self._listen, name=f"stigmer-listen-{self.schema}", daemon=True)
        self._listener.start()

    def _unreachable(self, exc: psycopg.OperationalError) -> errors.StartupError:
        if refused_login(exc):  # the server answered: waiting would change nothing
            who = "this daemon's" if self.use is StoreUse.SHARE else "this"
            return errors.StartupError(f"the database at {self.url} refused {who} login: {str(exc).strip()}")
        return errors.DatabaseUnreachable(f"cannot reach the database at {self.url}: {with_budget_hint(str(exc).strip())}")

    def _take_use(self, conn: psycopg.Connection[Any]) -> bool:
        """Take this application's part of the use lock on ``conn`` (``postgres_use``); False
        when a sole holder has the store. A sole holder refused raises ``StoreInUse``."""
        if self.use is StoreUse.SHARE:
            return take_share(conn, self.schema)
        if self.use is StoreUse.SOLE:
            holders = take_sole(conn, self.schema)
            if holders:
                raise errors.StoreInUse(in_use(self.schema, holders))
        return True

    # -- retention -------------------------------------------------------------
    def _settle_retention(self, conn: psycopg.Connection[Any], *, record: bool) -> None:
        """Record this store's bounds as the schema's (``record``), or take the schema's."""
        s = f'"{self.schema}"'
        columns = "retention_revisions, retention_bytes, retention_seconds"
        if record:
            with conn.transaction():
                found = conn.execute(f"SELECT {columns} FROM {s}.meta WHERE id = 1 FOR UPDATE").fetchone()
                before = tuple(found or (None, None, None))
                keep = self.retention.over(_usable_retention(before))
                now = (keep.max_revisions, keep.max_bytes, keep.max_age_seconds)
                conn.execute(
                    f"UPDATE {s}.meta SET retention_revisions = %s, retention_bytes = %s, retention_seconds = %s"
                    " WHERE id = 1",
                    now,
                )
            self.retention = self._own_retention = keep
            # A schema that recorded nothing was pruned by the defaults: a bound set now changes them too.
            recorded = all(value is not None for value in before)
            defaults = _usable_retention(before)
            was = before if recorded else (defaults.max_revisions, defaults.max_bytes, defaults.max_age_seconds)
            if was != now:
                log.warning(
                    "event retention of schema %r changes from %s%s to %s (this daemon's settings); every daemon "
                    "on the schema prunes by them from its next commit",
                    self.schema,
                    _described(was),
                    "" if recorded else " (the defaults: the schema recorded none)",
                    _described(now),
                )
            return
        found = conn.execute(f"SELECT {columns} FROM {s}.meta WHERE id = 1").fetchone()
        self.retention = self._recorded_retention(*(found or (None, None, None)))

    def _recorded_retention(self, revisions: object, size: object, seconds: object) -> EventRetention:
        """The schema's bounds as recorded (this store's own while none are); read once per change."""
        recorded = (revisions, size, seconds)
        if recorded == self._recorded:
            return self.retention
        keep = self._own_retention
        if revisions is not None and size is not None and seconds is not None:
            try:
                keep = EventRetention(
                    max_revisions=int(revisions),  # type: ignore[call-overload]
                    max_bytes=int(size),  # type: ignore[call-overload]
                    max_age_seconds=int(seconds),  # type: ignore[call-overload]
                )
            except ValueError as exc:  # edited by hand past what a daemon accepts
                log.error("schema %r records event retention it cannot use (%s); pruning by its own", self.schema, exc)
        self._recorded, self.retention = recorded, keep
        return keep

    # -- connections ---------------------------------------------------------
    def _version_connection(self) -> psycopg.Connection[Any]:
        """A connection of its own for reading the schema's version on an error path: the failed
        statement's connection may be inside an aborted transaction, and the pool may be busy."""
        conn: psycopg.Connection[Any] = self._connection_class.connect(self.settings.conninfo, **self._connect_kwargs)
        return conn

    def _translate(self, exc: psycopg.Error) -> Exception:
        """``translate``, but a statement failing because a newer release changed the schema
        under this daemon is refused saying so (``postgres_version``), never answered INTERNAL."""
        return self._version.refusal(exc) or translate(exc)

    def _acquire(self) -> psycopg.Connection[Any]:
        if self._writes.closed:
            raise errors.Unavailable("the store is closed")
        if not self._reachable and self._listener.is_alive():  # only the listener finds it answering again
            raise self._not_answering()
        started = time.monotonic()
        try:
            return self._pool.getconn()
        except psycopg_pool.PoolClosed:
            raise errors.Unavailable("the store is closed") from None
        except psycopg_pool.PoolTimeout as exc:
            raise self._timed_out(started) from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _not_answering(self) -> errors.Unavailable:
        """What a call is told at once while the listener finds the database not answering: such a
        call waited for a connection (``pool_timeout``) and then for an answer (``answer_timeout_ms``,
        35 s), holding a server thread and a connection for a client that gave up long before, so
        the daemon came back from a stall with a backlog of calls nobody waited for. A client told
        UNAVAILABLE retries with its backoff; the listener reads every ``UNREACHABLE_POLL_SECONDS``,
        so calls are taken again within about a second of the database's first answer."""
        why = self._why_not
        if why:
            return errors.Unavailable(
                f"{why}, so this daemon's calls would wait for it (its health is NOT_SERVING): calls are refused "
                f"until it is released, which the daemon checks every {UNREACHABLE_POLL_SECONDS:g} s; retry"
            )
        return errors.Unavailable(
            "the database does not answer this daemon (its health is NOT_SERVING): calls are refused until it "
            f"answers again, which the daemon checks every {UNREACHABLE_POLL_SECONDS:g} s; retry"
        )

    def _timed_out(self, started: float) -> errors.Unavailable:
        """Why no connection came within ``pool_timeout``: the database is unreachable only when
        the pool is short of connections and cannot open more; with every connection lent out to
        calls still running, the pool is saturated and the database may be perfectly healthy."""
        settings = self.settings
        if self._pool.lent < settings.pool_max and self._openings.failing_since(started):
            error, openings = self._openings.error, self._openings
            # the latest failure, if no attempt has opened one since: the pool waits between attempts
            if error and openings.failed_at > openings.opened_at and error != with_budget_hint(error):
                return errors.Unavailable(  # it answers: it refuses more connections than it holds
                    f"the database refuses this daemon more connections: none could be opened within "
                    f"{settings.pool_timeout:g} s ({with_budget_hint(error)})"
                )
            return errors.Unavailable(
                f"the database is unreachable: no connection could be opened within {settings.pool_timeout:g} s"
                + (f" ({error})" if error and self._openings.failed_at >= started else "")
            )
        if not self._reachable:  # every connection lent to calls a database that stopped answering holds
            return errors.Unavailable(
                f"the database does not answer this daemon (its health is NOT_SERVING): every one of its "
                f"{settings.pool_max} database connections is held by a call waiting for an answer; retry"
            )
        return errors.Unavailable(
            f"every one of this daemon's {settings.pool_max} database connections stayed busy for "
            f"{settings.pool_timeout:g} s (store URL parameters pool_max and pool_timeout): too many calls "
            "at once; retry, or give the daemon a larger pool_max"
        )

    @property
    def stream_read_slots(self) -> int:
        """Half the pool: streams catching up on the event log take turns on these, so the other
        half is always left to unary calls (docs/design.md, Watch and streams)."""
        return max(1, self.settings.pool_max // 2)

    def _release(self, conn: psycopg.Connection[Any], in_transaction: bool) -> None:
        if in_transaction and not lost(conn):
            with contextlib.suppress(psycopg.Error):  # the pool discards a broken connection on return
                conn.execute(b"ROLLBACK")
        self._pool.putconn(conn)

    def _discard_all(self, conn: psycopg.Connection[Any]) -> None:
        """Close ``conn`` (the pool drops a closed connection it gets back) and have the pool
        replace the rest: the idle ones began in the same state as the one that failed."""
        close_on_purpose(conn)
        self._pool.drain()

    def _replace_broken(self) -> psycopg.Connection[Any]:
        """A fresh connection once a broken one was returned: check the idle ones
        first, since after a database restart they are all dead."""
        self._pool.check()
        return self._acquire()

    # -- reads -------------------------------------------------------------
    def _refuse_missing_privileges(self, conn: Any) -> None:
        other = foreign_prune(conn, self.schema)
        if other is not None:
            raise errors.StartupError(
                f"schema {self.schema!r} at {self.url} was renamed from {other!r}: its function prune_events still "
                f"works on schema {other!r}, and would prune that schema's event log; open the store under the name "
                "it was made with (restore a backup into a database of its own, not a renamed schema)"
            )
        missing = missing_privileges(conn, self.schema)
        if missing:
            grants = [f"GRANT USAGE ON SCHEMA {self.schema} …", f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {self.schema} …"]
            if any("EXECUTE" in what for what in missing):
                grants.append(f"GRANT EXECUTE ON FUNCTION {self.schema}.prune_events TO …")
            raise errors.StartupError(
                f"the role of {self.url} lacks {', '.join(missing)} in schema {self.schema!r}, which a daemon uses: "
                f"grant them (docs/operations.md, The database and its roles: {', '.join(grants)}), or start the "
                "daemon as a role that has them"
            )

    def _tell_connection_budget(self, conn: psycopg.Connection[Any]) -> None:
        """A pool larger than the database allows opened connections until the server refused them
        (``remaining connection slots are reserved``), and the daemon said only the driver's words,
        one refusal after another: it now says at start what does not fit. Other daemons' pools
        and commands count too, which one daemon cannot see."""
        row = conn.execute(
            b"SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
        ).fetchone()
        if row is None:  # pragma: no cover - SELECT of two settings returns one row
            return
        allowed, reserved = int(row[0]), int(row[1])
        needed = self.settings.pool_max + 1  # the pool and the listener's connection
        limit = conn.execute(b"SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user").fetchone()
        if limit is not None and 0 <= int(limit[0]) < needed:
            log.warning(
                "pool_max %d and the listener need %d connections, more than the %d the role of %s may hold "
                "(its CONNECTION LIMIT): calls will wait for connections it refuses. Lower pool_max in the "
                "store URL, or raise the role's limit (ALTER ROLE ... CONNECTION LIMIT); every daemon of the "
                "role counts",
                self.settings.pool_max,
                needed,
                int(limit[0]),
                self.url,
            )
        if needed > allowed - reserved:
            log.warning(
                "pool_max %d and the listener need %d connections, more than the %d the database at %s lets a "
                "role other than a superuser hold (max_connections %d, %d reserved): calls will wait for "
                "connections it refuses. Lower pool_max in the store URL, or raise max_connections; every "
                "daemon's pool_max + 1 (and each command opening the database) must fit together",
                self.settings.pool_max,
                needed,
                allowed - reserved,
                self.url,
                allowed,
                reserved,
            )

    def _misspelt(self, conn: psycopg.Connection[Any]) -> str:
        """When the schema named holds no store while others of the database do: a misspelt
        ``schema=`` with a role that may not create it was told only that the owner could, which
        would have made the wrong, empty deployment. "" when it cannot tell."""
        try:
            conn.rollback()
            held = conn.execute(
                b"SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_version'",
                (self.schema,),
            ).fetchone()
            others = [] if held is not None else other_schemas(conn, self.schema)
        except psycopg.Error:
            return ""
        if not others:
            return ""
        named = ", ".join(repr(name) for name in others)
        return (
            f"; schema {self.schema!r} holds no stigmer store, and this database's stigmer schemas are {named}: "
            "if one of them is the deployment's, name it (schema= in the store URL)"
        )

    def _no_schema(self, conn: psycopg.Connection[Any]) -> str:
        others = other_schemas(conn, self.schema)
        named = ", ".join(repr(name) for name in others)
        return (
            f"schema {self.schema!r} at {self.url} holds no stigmer store"
            + (f" (this database's stigmer schemas: {named})" if others else " (nor does any schema of this database)")
            + ": name the deployment's schema (schema= in the store URL); a new deployment's is created by its "
            "first daemon, or by `stigmer doctor --store URL`"
        )

    def _tell_new_schema(self, conn: psycopg.Connection[Any]) -> None:
        """A daemon given a misspelt schema made a new, empty one and answered every token as
        not valid, with nothing in its log to say why: it now says it made one, and names the
        database's other schemas of this engine."""
        others = other_schemas(conn, self.schema)
        named = ", ".join(repr(name) for name in others)
        log.warning(
            "created schema %r at %s: it held no stigmer tables, so this is a new, empty deployment%s. "
            "A daemon or command meant to reach an existing one must name its schema (schema= in the store URL)",
            self.schema,
            self.url,
            f" (other stigmer schemas in this database: {named})" if others else "",
        )

    def part_events_sql(self, count: int) -> bytes:
        """A page of ``count`` partitions' events (params per partition: part, revision, revision,
        seq, page; then page), made once per count: each partition's walks its own index
        (part, revision, seq) and stops at the page, so other orgs' events are never read."""
        found = self._sql_part_events.get(count)
        if found is None:
            one = (
                f'(SELECT revision, seq, payload FROM "{self.schema}".events WHERE part = %s AND revision >= %s'
                " AND (revision, seq) > (%s, %s) ORDER BY revision, seq LIMIT %s)"
            )
            union = " UNION ALL ".join([one] * count)
            found = within_bytes(
                f"SELECT revision, seq, payload FROM ({union}) AS e ORDER BY revision, seq LIMIT %s",
                "revision, seq",
                "payload",
            ).encode()
            self._sql_part_events[count] = found
        return found

    def read(self, *, restartable: bool = False) -> Reader:
        return Reader(self, self._acquire(), LOOSE_QUERIES if restartable else 0)

    # -- writes ------------------------------------------------------------
    def transact(self, fn: Callable[[Any], T]) -> T:
        return self._writes.transact(fn)

    def _tally(self, row: tuple[Any, ...]) -> Log:
        """The event log's state as the statement beginning a write read it (``_sql_lock_revision``)."""
        return Log(
            bytes=int(row[1]),
            revisions=int(row[2]),
            compacted=int(row[3]),
            oldest=int(row[4] or 0),
            oldest_at=row[5],
            now=row[6],
            keep=self._recorded_retention(row[7], row[8], row[9]),
        )

    def rehearse(self, fn: Callable[[Any], T]) -> T:
        """A dry run (``RehearsesWrites``): ``fn`` in a transaction that never takes the revision
        lock and is always rolled back. Holding the lock, a dry run held every daemon's writes of
        every org for as long as it ran (a dry-run delete of a large tree, seconds), and could be
        repeated at will, as it changes nothing. Without it, its reads may see commits made
        meanwhile, which a dry run's answer can afford; its own puts and events are held until a
        commit that never comes, so they reach the database only before a scan, as rows no
        other write waits on (the objects it changes, which only their own org writes)."""
        conn = self._acquire()
        try:
            cur = conn.execute(self._begin_rehearsal, prepare=False)
            cur.nextset()
            row = cur.fetchone()
            assert row is not None
            tally = self._tally(row)
            return fn(Writer(self, conn, int(row[0]), tally, {}, {}, [], set()))
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        finally:
            if not lost(conn) and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
            self._pool.putconn(conn)

    def _commit_batch(self, batch: list[Pending]) -> None:
        fresh_connection_tried = False
        for _ in range(_CONFLICT_ATTEMPTS):
            try:
                try:
                    self._run_batch(batch, savepoints=False)
                except _CallerFailed:  # not a conflict: run it again at once, each caller under a savepoint
                    self._run_batch(batch, savepoints=True)
                return
            except Retry:
                continue
            except _StaleConnection:
                if fresh_connection_tried:
                    error: BaseException = errors.Unavailable(
                        "the connection to the database broke, and so did the one opened again after it "
                        "(the database may be restarting or ending connections); nothing was written; retry"
                    )
                    break
                fresh_connection_tried = True
                self._pool.check()
            except BaseException as exc:  # nobody's write landed
                if unusable(exc) and not fresh_connection_tried:
                    fresh_connection_tried = True  # on a connection opened now: the database may take writes again
                    continue
                error = self._translate(exc) if isinstance(exc, psycopg.Error) else exc
                break
        else:
            error = errors.Unavailable("the database kept aborting this write as a conflict; try again")
        for pending in batch:
            pending.error = pending.error or error
            pending.result = None
            pending.callbacks = []

    def _run_batch(self, batch: list[Pending], savepoints: bool) -> None:
        """One transaction for the batch; with ``savepoints``, each caller's ``fn`` under a savepoint
        of its own, else ``_CallerFailed`` (the transaction rolled back) when one of several fails."""
        conn = self._acquire()
        holding = unknown = False
        seen: tuple[int, int, int, int] | None = None
        try:
            try:
                # one simple-protocol statement, not a pipeline (see ``Writer``): the lock
                # held, the server ends the transaction if the daemon then sends nothing
                ahead, statement = self._begin_write
                cur = conn.execute(statement, prepare=False)
                cur.nextset()
                row = cur.fetchone()
                known: dict[bytes, bytes | None] = dict.fromkeys(ahead)
                if ahead:
                    cur.nextset()
                    known.update((bytes(key), bytes(value)) for key, value in cur.fetchall())
            except psycopg.OperationalError as exc:
                if conn.broken and not isinstance(exc, pg_errors.QueryCanceled | NoAnswer):
                    raise _StaleConnection from exc  # nothing ran: safe to start over on another connection
                raise
            assert row is not None
            base = revision = int(row[0])
            tally = self._tally(row)
            shared = savepoints and len(batch) > 1
            # Without savepoints the callers run in one transaction: their puts and appends are
            # held together and go with the commit, one round trip for the batch's writes (if that
            # statement fails, the batch runs again with savepoints, each caller's writes sent as
            # its ``fn`` returns, so the failure is its caller's alone).
            together = not savepoints
            held_puts: dict[bytes, bytes] = {}
            held_appends: list[tuple[int, int, bytes, str]] = []
            held_deletes: set[bytes] = set()
            writer: Writer | None = None
            wrote = False  # a rolled-back caller's writes count too: a needless bump only costs a reader a retry
            handed: list[tuple[int, bytes]] = []
            for pending in batch:
                pending.error = None
                pending.result = None
                pending.callbacks = []
                if shared:
                    conn.execute(b"SAVEPOINT stigmer_call")
                if together:
                    writer = Writer(self, conn, revision, tally.copy(), known, held_puts, held_appends, held_deletes)
                else:
                    writer = Writer(self, conn, revision, tally.copy(), dict(known), {}, [])
                try:
                    pending.result = pending.fn(writer)
                    if not together:
                        writer.flush()
                except Exception as exc:
                    wrote = wrote or writer._wrote
                    if lost(conn) or isinstance(exc, Retry) or unusable(exc):
                        raise
                    conn.execute(b"ROLLBACK TO SAVEPOINT stigmer_call" if shared else b"ROLLBACK")
                    pending.error = self._translate(exc) if isinstance(exc, psycopg.Error) else exc
                    if len(batch) > 1 and not shared:
                        raise _CallerFailed from exc  # the others' writes went with it: run them again
                    continue
                wrote = wrote or writer._wrote
                revision = writer._revision or revision
                tally = writer._log  # adopted only once its fn succeeded: a rolled-back one changed nothing
                if not together:
                    for key in ahead:  # what it put or deleted of them, for the next caller
                        known[key] = writer._got[key]
                pending.callbacks = writer._callbacks
                handed.extend(writer.appended)
            if not shared and batch[0].error is not None:
                return  # rolled back already: nothing to commit
            if revision != base:
                self._hold(base, revision)
                holding = True
            held = writer.take_held() if together and writer is not None else []
            try:
                with conn.pipeline():
                    for sending in held:
                        conn.execute(*sending)
                    counts = tally.counts()
                    if counts is not None:
                        conn.execute(self._sql_count_parts, counts)
                    if revision != base or wrote:
                        conn.execute(self._sql_set_revision, (revision, tally.bytes, tally.revisions, tally.compacted))
                        seen = (revision, tally.revisions, tally.bytes, tally.compacted)
                    if revision != base:
                        conn.execute(b"SELECT pg_notify(%s, %s)", (self.channel, str(revision)))
                    conn.execute(b"COMMIT")
            except psycopg.Error as exc:
                unknown = commit_unknown(conn, exc)
                drop_after_pipeline(conn)  # and if the outcome is unknown, its state is too
                if unknown:
                    raise errors.Unavailable(
                        f"{why_unknown(exc)} while committing; the write may or may not have been applied"
                    ) from exc
                if held and len(batch) > 1:
                    raise _CallerFailed from exc  # whose writes failed is not known: one by one
                raise
            if revision != base:  # followers read after the commit: one that came later reads the store
                for follower in self._followers:
                    follower(base, revision, handed)
        except BaseException as exc:
            if holding:  # not committed (or not known to be): another daemon's commit may take that revision
                with self._revision_cond:
                    self._announcing = 0
                if unknown:
                    self._recheck()
            if not lost(conn) and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
            if unusable(exc):
                self._discard_all(conn)
            raise
        finally:
            self._pool.putconn(conn)
            if holding:
                self._hold(None)
        self.commits += 1
        if seen is not None:
            self._saw_log(seen)
        if not self._reachable:  # a commit is the database answering
            self._set_reachable(True)
        if revision != base:
            self._advance(revision)

    def read_ahead(self, keys: Collection[bytes]) -> None:
        """Fetch ``keys`` in the statement that begins each write and takes the revision lock
        (``ReadsAhead``): a write's gets of them are then answered without a round trip of their
        own with the lock held. The keys go as literals, since a simple-protocol statement takes
        no parameters (see ``Writer``); they are the daemon's own (kind records), never a caller's."""
        ahead = tuple(dict.fromkeys(keys))
        statement = b"BEGIN; " + self._sql_lock_revision
        if ahead:
            listed = ", ".join(f"'\\x{key.hex()}'::bytea" for key in ahead)
            statement += f'; SELECT key, value FROM "{self.schema}".kv WHERE key IN ({listed})'.encode()
        self._begin_write = (ahead, statement)

    # -- revisions -----------------------------------------------------------
    def follow_commits(self, follower: Handed) -> None:
        """Give each later commit of this daemon's to ``follower`` once its COMMIT returned, before
        ``wait_for_revision`` answers it (``HandsOverEvents``): the daemon's batches commit one at
        a time, so they come in revision order; other daemons' commits are read from the log."""
        with self._revision_cond:
            self._followers = (*self._followers, follower)

    def unfollow_commits(self, follower: Handed) -> None:
        with self._revision_cond:
            # ``!=``, not ``is not``: a bound method is a new object each time it is named
            self._followers = tuple(f for f in self._followers if f != follower)

    def _hold(self, base: int | None, announcing: int = 0) -> None:
        with self._revision_cond:
            self._committing = base
            if base is None:
                self._revision_cond.notify_all()
            else:
                self._announcing = announcing

    def _recheck(self) -> None:
        """Read the revision once more after a commit whose answer was lost. It may have been
        applied, and its notice reached the listener while it was still this daemon's announced
        commit, so no read followed: without this, waiters learnt of it only at a later notice or
        the listener's next read, up to ``LISTEN_SECONDS`` on. The read goes on a thread of its
        own, since the database may be gone and the caller is owed its UNAVAILABLE now. One thread
        at a time, so a database that drops every connection is not sent one per failed commit: a
        loss while it reads has it read once more when done (that commit may have been applied
        after its read), however many losses there were."""
        with self._revision_cond:
            if self._rechecking:
                self._recheck_again = True
                return
            self._rechecking = True

        def recheck() -> None:
            again = True
            try:
                while again:
                    self._poll_revision()
                    with self._revision_cond:
                        again, self._recheck_again = self._recheck_again, False
            finally:
                with self._revision_cond:
                    self._rechecking = self._recheck_again = False

        threading.Thread(target=recheck, name=f"stigmer-recheck-{self.schema}", daemon=True).start()

    def _known(self, notices: list[psycopg.Notify]) -> bool:
        """Whether every one of a burst of notices names a revision this daemon knows of already, or
        the very one its own commit is advancing to: then the listener need not read. One between
        the two is another daemon's commit, which this daemon's own may yet fail to follow, so it
        is read. A payload is never taken as a revision to advance to (any role may NOTIFY
        anything): at worst a forged one spares a read that another daemon's commit would not
        need, since that commit's own notice names its own revision."""
        with self._revision_cond:
            known, announcing = self._revision, self._announcing
        return all(
            notice.payload.isdecimal() and (int(notice.payload) <= known or int(notice.payload) == announcing)
            for notice in notices
        )

    def _visible(self) -> int:
        """The revision ``wait_for_revision`` answers: not past a commit still being handed over."""
        held = self._committing
        return self._revision if held is None else min(self._revision, held)

    def _advance(self, revision: int) -> None:
        with self._revision_cond:
            if revision > self._revision:
                self._revision = revision
                self._revision_cond.notify_all()

    def _listen(self) -> None:
        backoff = 0.05
        failures = 0
        while not self._stop.is_set():
            first, self._first_listen = self._first_listen, None
            try:
                with first or self._connection_class.connect(self.settings.conninfo, **self._connect_kwargs) as conn:
                    if first is None:  # a reconnect: what cut the listener off likely cut the pool's too
                        if not self._rehold(conn):
                            raise _HeldAlone(held_alone(self.schema))
                        self._check_pool()
                    # Every read of this connection is a health check's: one the database leaves
                    # unanswered for health_timeout_ms reports it unreachable (below), where the
                    # connection's own bound (answer_timeout_ms, 35 s) held a frozen database's
                    # daemon SERVING that long when the freeze caught the read after a notice.
                    conn.answer_seconds = self.settings.health_seconds
                    conn.execute(f'LISTEN "{self.channel}"'.encode())
                    row = conn.execute(self._sql_watch).fetchone()  # what was committed while away
                    read_at = time.monotonic()
                    if row:
                        self._watched(row)
                    self._set_reachable(True)
                    backoff = 0.05
                    failures = 0
                    missed = 0
                    while not self._stop.is_set():
                        # A notice only wakes the listener, which reads the revision: any role that
                        # can connect may NOTIFY anything, and a revision taken from one would send
                        # every watch after events that do not exist. Notices that arrive during
                        # the read are taken together by the next wait: one read per burst.
                        # This daemon's own commits advance the revision themselves: their notices
                        # need no read, but one read per LISTEN_SECONDS is made anyway, for the
                        # schema's version (a newer release's migration) and as a bound on trusting.
                        # The quiet spell's read also looks for a session holding the store's writes
                        # (``_look``): every half health timeout, so one is reported within one and a
                        # half of it, where after a 5 s spell it took up to twice a 5 s timeout.
                        quiet = min(LISTEN_SECONDS, self.settings.health_seconds / 2)
                        if not self._reachable:
                            quiet = min(quiet, UNREACHABLE_POLL_SECONDS)
                        notices = list(conn.notifies(timeout=quiet, stop_after=1))
                        if self._stop.is_set():
                            # let go of the use lock before closing: a closed connection's backend
                            # lets go as it exits, after the close returns, and a key rotation
                            # started as this daemon stopped was refused "in use" by it
                            with contextlib.suppress(psycopg.Error):
                                conn.execute(b"SELECT pg_advisory_unlock_all()")
                            return
                        if notices:
                            if time.monotonic() - read_at < LISTEN_SECONDS and self._known(notices):
                                continue
                            row = conn.execute(self._sql_watch).fetchone()
                            read_at = time.monotonic()
                            if row:
                                self._watched(row)
                            self._set_reachable(True)
                            missed = 0
                            continue
                        # Silence: read the revision on another connection. A connection that
                        # stopped answering (a hung server, a path that drops packets) delivers
                        # no notice and raises nothing; this way waiters learn of other daemons'
                        # writes within LISTEN_SECONDS anyway, and a listener that missed writes
                        # twice running is replaced.
                        moved = self._poll_revision(conn)
                        read_at = time.monotonic()
                        if moved:
                            missed += 1
                            if missed >= 2:
                                log.warning("store listener missed other daemons' writes; reconnecting it")
                                break
                        else:
                            missed = 0
            except _HeldAlone as exc:  # a rotation took the store while this listener was away
                log.warning("%s", exc)
                self._set_reachable(False)
            except psycopg.Error as exc:
                log.debug("store listener lost its connection: %s", exc)
                if schema_shaped(exc) and self._version.refusal(exc) is not None:
                    failures = 0  # the database answers: a newer release changed what the listener reads
                elif isinstance(exc, NoAnswer):
                    failures = 2  # a read it left unanswered, as the quiet spell's own read (_poll_revision)
                else:
                    failures += 1
                if failures >= 2:  # not the first: a connection killed alone is replaced at once
                    self._set_reachable(False)
            except Exception as exc:  # not the database's (no file descriptor left to connect with): the
                # thread must live on, or this daemon's watches miss the other daemons' writes for good
                log.warning("store listener failed (%s: %s); trying again", type(exc).__name__, exc)
                failures += 1
                if failures >= 2:
                    self._set_reachable(False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, UNREACHABLE_POLL_SECONDS)  # calls are refused until it reconnects

    def _check_pool(self) -> None:
        """Have the pool test its idle connections, off the listener's thread: after a database
        restart or a cut path they are all dead, and until a call found each one so, the pool's
        gauges counted them open and the next calls each met one first."""

        def check() -> None:
            with contextlib.suppress(psycopg.Error, psycopg_pool.PoolClosed):
                self._pool.check()

        threading.Thread(target=check, name=f"stigmer-pool-check-{self.schema}", daemon=True).start()

    def _rehold(self, conn: psycopg.Connection[Any]) -> bool:
        """The use lock again, on a listener's new connection: a sole holder that lost its first
        connection takes it again if it can (its one transaction is checked on its own)."""
        if self.use is StoreUse.SOLE:
            if take_sole(conn, self.schema):
                log.warning("schema %r: the key rotation's lock was lost with its connection", self.schema)
            return True
        return self._take_use(conn)

    def _poll_revision(self, listening: psycopg.Connection[Any] | None = None) -> bool:
        """Read the revision through the pool; whether it had moved without a notice.

        The read waits ``health_timeout_ms`` at most, for a connection (half of it) and for its
        answer: no answer marks the database unreachable (health NOT_SERVING). When the pool has no
        connection to give (every one lent, which is load and no sign of a dead database, or new
        ones not opening), the read goes on the listener's own connection, ``listening``, if there
        is one: with every connection lent to calls a frozen database holds, only an answer on
        another tells load from a dead database before those calls' own ``answer_timeout_ms``."""
        bound = self.settings.health_seconds
        started = time.monotonic()
        try:
            try:  # half the bound for a connection, the rest for the answer: health_timeout_ms in all
                with self._pool.connection(timeout=bound / 2) as conn:
                    locked, row = self._look(conn, bound - (time.monotonic() - started))
            except psycopg_pool.PoolTimeout:
                if listening is None:
                    raise
                # every pooled connection lent: perhaps to calls a lock holds, so it is looked for here too
                locked, row = self._look(listening, max(bound - (time.monotonic() - started), bound / 2))
        except (psycopg.Error, psycopg_pool.PoolClosed) as exc:
            log.debug("store listener could not read the revision: %s", exc)
            if isinstance(exc, psycopg.Error) and schema_shaped(exc):
                self._version.refusal(exc)
            elif isinstance(exc, NoAnswer):  # a server that holds connections open and answers nothing
                self._set_reachable(False)
            return False
        if locked is not None:
            self._set_reachable(False, locked.said, locked.holders)
        else:
            self._set_reachable(True)
        if not row:
            return False
        revision = int(row[0])
        with self._revision_cond:
            moved = revision > self._revision
        self._watched(row)
        return moved

    def _look(self, conn: psycopg.Connection[Any], seconds: float) -> tuple[postgres_locks.Locked | None, Any]:
        """A lock held against the store's tables (``postgres_locks``), else the revision read, each
        round trip within ``seconds``. The lock first: one on ``meta`` would hold the read until it
        was given up, told as a database that does not answer, naming no one."""
        started = time.monotonic()
        with within(conn, seconds):
            locked = postgres_locks.locked_by(
                conn, self.schema, self._sql_tables_free, self._sql_lock_holders, self._sql_blockers
            )
        if locked is not None:
            return locked, None
        return None, answered_within(conn, seconds - (time.monotonic() - started), self._sql_watch)

    def _watched(self, row: tuple[Any, ...]) -> None:
        """The listener's read (``_sql_watch``): the revision, the schema's version, the log's fill
        and the retention recorded."""
        self._advance(int(row[0]))
        self._version.seen(int(row[1] or 0))
        self._recorded_retention(row[5], row[6], row[7])
        self._saw_log((int(row[0]), int(row[2]), int(row[3]), int(row[4])))

    def _saw_log(self, seen: tuple[int, int, int, int]) -> None:
        with self._revision_cond:
            if seen[0] >= self._log_seen[0]:
                self._log_seen = seen

    def event_log_stats(self) -> EventLogStats:
        """What this daemon last committed or read: its listener reads at each other daemon's
        commit and at least every ``LISTEN_SECONDS``, so a scrape waits on no database."""
        return EventLogStats(*self._log_seen, self.retention)

    def schema_versions(self) -> SchemaVersions:
        return SchemaVersions(self._version.version, SCHEMA_VERSION)

    def pool_stats(self) -> PoolStats:
        stats = self._pool.get_stats()
        return PoolStats(
            size=stats.get("pool_size", 0),
            idle=stats.get("pool_available", 0),
            max=self.settings.pool_max,
            waiting=stats.get("requests_waiting", 0),
        )

    def on_reachability(self, callback: Callable[[bool], None]) -> None:
        with self._reachability_lock:
            self._reachability.append(callback)
            serving = self._serving
        if not serving:
            callback(False)

    def _set_reachable(self, reachable: bool, why: str = "", holders: str = "") -> None:
        """Tell the health service when the database stops (or starts again) answering this daemon.

        Told it does not answer (at each of the listener's reads that gets no answer), the calls
        already waiting ``health_timeout_ms`` for one are given up, and until it answers again so
        is every other call in flight once it has waited as long (``Waits.not_answering``): they
        would wait out ``answer_timeout_ms`` (35 s), holding a server thread and a connection
        each, while the calls after them are refused at once (``_not_answering``). ``why``: a lock
        on the store's tables found by the listener's probe, in words callers are told (else the
        database does not answer); ``holders``: who holds it, for the log only (a caller is never
        told the database's users, sessions or their queries)."""
        if reachable:
            self._waits.answering()
        else:
            given_up = self._waits.not_answering(self.settings.health_seconds, why)
            if given_up:
                log.warning("gave up %d call(s) waiting on the database for its answer", given_up)
        with self._reachability_lock:
            was = self._why_not
            self._why_not = "" if reachable else why  # the latest words, said again only when the cause changes
            if reachable == self._reachable and (reachable or bool(why) == bool(was)):
                return
            self._reachable = reachable
        if reachable:
            log.warning("%s at %s", "the store's tables are free again" if was else "the database answers again", self.url)
        elif why:  # its connections are fine: they wait for the lock
            log.warning(
                "%s%s, which this daemon's calls would wait for; the daemon reports NOT_SERVING until it is "
                "released (%s)",
                why,
                f" ({holders})" if holders else "",
                self.url,
            )
        else:
            # Its idle connections are dead, or soon will be: counted open (stigmer_database_connections)
            # until a call met each, a stopped database showed the pool full.
            self._check_pool()
            # A daemon's health goes NOT_SERVING; a command (no health service) has its calls refused.
            after = "the daemon reports NOT_SERVING" if self.use is StoreUse.SHARE else "calls are refused UNAVAILABLE"
            log.warning("the database at %s does not answer; %s until it does", self.url, after)
        self._report()

    def _report(self) -> None:
        """Tell the health followers whether this daemon can serve: the database answers it, and
        its schema is not newer than this code knows (a daemon left running through a newer
        release's migration reports NOT_SERVING even while the calls it gets still work)."""
        with self._reachability_lock:
            serving = self._reachable and not self._version.newer
            if serving == self._serving:
                return
            self._serving = serving
            callbacks = list(self._reachability)
        for callback in callbacks:
            callback(serving)

    def wait_for_revision(self, after: int, timeout: float) -> int:
        with self._revision_cond:
            if self._visible() <= after and not self._writes.closed:
                self._revision_cond.wait(timeout)
            return self._visible()

    def wake_waiters(self) -> None:
        with self._revision_cond:
            self._revision_cond.notify_all()

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Refuse new writes, let the ones in flight commit, then close every connection."""
        if not self._writes.close():
            return
        self._stop.set()
        try:  # wake the listener now rather than at its next timeout
            with self._pool.connection(timeout=1.0) as conn:
                conn.execute(b"SELECT pg_notify(%s, 'closing')", (self.channel,))
        except (psycopg.Error, psycopg_pool.PoolClosed):
            pass
        self._listener.join(timeout=6.0)
        if self._first_listen is not None:  # closed before its listener took it
            self._first_listen.close()
        self._pool.close()
        with self._revision_cond:
            self._revision_cond.notify_all()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CallerFailed(Exception):
    """A caller's ``fn`` failed in a batch run without savepoints: run it again with them."""


class _HeldAlone(Exception):
    """A listener's new connection found the store held alone (a key rotation): not serving until it ends."""


class _StaleConnection(Exception):
    """The pooled connection was dead before the transaction began."""
