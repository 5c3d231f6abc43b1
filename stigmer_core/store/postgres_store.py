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
one round trip (see ``_Reader``).

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
import datetime
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from stigmer_core import errors
from stigmer_core.store import keys
from stigmer_core.store.group_commit import GroupCommit, Pending
from stigmer_core.store.postgres_connection import NoAnswer, Openings, Waits, answered_within, bounded_class
from stigmer_core.store.postgres_connection import detail as _detail
from stigmer_core.store.postgres_schema import check_schema_name, migrate, other_schemas
from stigmer_core.store.postgres_version import SchemaWatch, schema_shaped
from stigmer_core.store.protocol import Handed, SnapshotMoved
from stigmer_core.store.retention import PRUNE_PER_COMMIT, EventRetention

T = TypeVar("T")
log = logging.getLogger(__name__)


class _QuietOnPurpose(logging.Filter):
    """psycopg_pool warns of every closed connection it gets back ("discarding closed
    connection"), as if it had broken; one this module closed on purpose is dropped as planned,
    and the warning would have an operator look for a fault that is not there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and getattr(args[0], "_stigmer_closed_on_purpose", False))


logging.getLogger("psycopg.pool").addFilter(_QuietOnPurpose())


def _close_on_purpose(conn: psycopg.Connection[Any]) -> None:
    """Close ``conn`` before it goes back to the pool, which drops it (and, quietly, says nothing)."""
    conn._stigmer_closed_on_purpose = True  # type: ignore[attr-defined]
    conn.close()


DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
LOOSE_QUERIES = 2
"""Queries a restartable read answers outside a transaction: a get, or a slug then its object."""
LISTEN_SECONDS = 5.0
"""Silence after which the listener reads the revision itself, in case its connection stopped delivering."""
UNREACHABLE_POLL_SECONDS = 1.0
"""While the database is marked unreachable, how often the listener reads the revision: health
turns SERVING again within about this long of its first answer."""
ANSWER_GRACE_MS = 5_000
"""How much longer than ``statement_timeout_ms`` the daemon waits for an answer by default."""
DEFAULT_HEALTH_TIMEOUT_MS = 5000
"""How long the listener's revision read waits before the daemon reports NOT_SERVING, by default."""
DEFAULT_IDLE_IN_TRANSACTION_MS = 5000
"""How long a transaction may send nothing (``idle_in_transaction_timeout_ms``) by default."""
_CONFLICT_ATTEMPTS = 5

DEFAULT_SCHEMA = "stigmer"


@attrs.frozen
class PostgresSettings:
    """How a daemon uses its database; each is a query parameter of the store URL.

    In ``postgresql://user@host/db?sslmode=require&schema=team&pool_max=32``
    the parameters named below are the daemon's and are taken out; the rest
    (``sslmode``, ``connect_timeout``...) go to libpq as they are.
    """

    conninfo: str
    schema: str = DEFAULT_SCHEMA
    """Schema holding every table; one per deployment sharing a database."""
    pool_min: int = 2
    """Connections kept open while idle."""
    pool_max: int = 16
    """Most connections one daemon opens (the server's max_connections is shared by every daemon)."""
    pool_timeout: float = 5.0
    """Seconds a call waits for a free (or reconnected) connection before UNAVAILABLE."""
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    """Seconds to establish one connection (libpq's ``connect_timeout``)."""
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    """A statement (or a writer waiting for the revision lock) running longer fails UNAVAILABLE."""
    idle_in_transaction_timeout_ms: int | None = None
    """A transaction of this daemon that sends nothing for this long is ended by the server,
    releasing the revision lock every daemon's writes wait for: a daemon paused while it held it
    (a VM paused, swapping, SIGSTOP) stopped every other daemon's writes until its statement
    timeout, and the first writer waiting failed with its own. A write's steps run between its
    statements, milliseconds apart; ``min(5000, statement_timeout_ms)`` when not given."""
    answer_timeout_ms: int | None = None
    """How long the daemon waits for the database to answer one round trip before it gives the
    connection up (UNAVAILABLE); ``statement_timeout_ms`` plus 5 s when not given. The server
    enforces ``statement_timeout_ms``; this bounds a server that cannot (its processes stopped, a
    storage stall), which TCP does not notice since the peer's kernel still acknowledges."""
    health_timeout_ms: int = DEFAULT_HEALTH_TIMEOUT_MS
    """How long any read of the listener's (after a notice, on its own connection, and after
    ``LISTEN_SECONDS`` without one, through the pool, a connection's wait included) waits for its
    answer before the daemon reports NOT_SERVING and refuses new calls (at most
    ``answer_timeout_ms``). A call may rightly run for ``statement_timeout_ms``, but this read is
    one row: a database that leaves it unanswered this long is not one to send calls to, and a
    load balancer should hear so in seconds, not after the 35 s the calls themselves wait."""
    scan_page: int = 256
    """Rows fetched per round trip of a range scan; a scan never loads a whole kind."""
    scan_bytes: int = 4 << 20
    """Bytes of values a round trip of a range scan or an event-log read fetches at most (its
    first row always comes): 256 rows of 2 MiB objects, or of events carrying them, were 512 MiB
    held at once by one list page or one watch catching up."""
    max_batch: int = 64
    """Most callers' writes one daemon commits in one transaction (group commit)."""

    @classmethod
    def from_url(cls, url: str) -> PostgresSettings:
        parts = urlsplit(url)
        values: dict[str, Any] = {}
        libpq: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in _URL_SETTINGS:
                kind = _URL_SETTINGS[name]
                values[name] = value if kind is str else _number(name, value, kind)
            else:
                libpq.append((name, value))
        timeouts = [_number(n, v, int) for n, v in libpq if n == "connect_timeout"]
        connect_timeout = timeouts[-1] if timeouts else DEFAULT_CONNECT_TIMEOUT
        if not timeouts:  # libpq's own default is to wait forever
            libpq.append(("connect_timeout", str(connect_timeout)))
        given = {name for name, _ in libpq}
        libpq += [(name, value) for name, value in _DEAD_PEER.items() if name not in given]
        conninfo = urlunsplit(parts._replace(query=urlencode(libpq)))
        try:  # libpq's own check, now: at connect it read as a failure to create the schema
            conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise errors.StartupError(
                f"store URL: {str(exc).strip()}; the daemon's own parameters are {', '.join(sorted(_URL_SETTINGS))}, "
                "the rest go to libpq"
            ) from None
        settings = cls(conninfo=conninfo, connect_timeout=connect_timeout, **values)
        check_schema_name(settings.schema)
        if settings.pool_min < 1 or settings.pool_max < settings.pool_min:
            raise errors.StartupError("store URL: need 1 <= pool_min <= pool_max")
        return settings

    @property
    def idle_ms(self) -> int:
        return self.idle_in_transaction_timeout_ms or min(DEFAULT_IDLE_IN_TRANSACTION_MS, self.statement_timeout_ms)

    @property
    def answer_seconds(self) -> float:
        ms = self.answer_timeout_ms or self.statement_timeout_ms + ANSWER_GRACE_MS
        return ms / 1000

    @property
    def health_seconds(self) -> float:
        return min(self.health_timeout_ms / 1000, self.answer_seconds)


_DEAD_PEER = {
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
"""libpq settings (each kept when the URL gives its own) so that a connection whose path went
dead (a partition, a NAT or load balancer dropping it) fails in about 30 s and is replaced:
TCP's own defaults wait hours on an idle connection and 15 minutes on one with data unacknowledged."""

_URL_SETTINGS: dict[str, type] = {
    "schema": str,
    "pool_min": int,
    "pool_max": int,
    "pool_timeout": float,
    "statement_timeout_ms": int,
    "answer_timeout_ms": int,
    "health_timeout_ms": int,
    "idle_in_transaction_timeout_ms": int,
    "scan_page": int,
    "scan_bytes": int,
    "max_batch": int,
}


PG_INT_MAX = 2_147_483_647
"""The largest value of PostgreSQL's integer settings (``statement_timeout`` takes milliseconds)."""
_MOST: dict[str, float] = {
    "statement_timeout_ms": PG_INT_MAX,
    "idle_in_transaction_timeout_ms": PG_INT_MAX,
    "answer_timeout_ms": PG_INT_MAX,
    "health_timeout_ms": PG_INT_MAX,
    "pool_timeout": 86_400.0,
    "scan_bytes": 1 << 40,
}
"""Bounds checked when the URL is read: past them the server refused the session's settings at the
first connection, which the start reported as a database it could not reach; and a wait of
``inf`` (or ``nan``, which every comparison fails) never ends, or ends at once."""


def _number(name: str, value: str, kind: type) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise errors.StartupError(f"store URL: {name}={value!r} is not a number") from None
    if kind is float and not math.isfinite(number):
        raise errors.StartupError(f"store URL: {name}={value!r} is not a finite number")
    if number <= 0:
        raise errors.StartupError(f"store URL: {name} must be positive")
    most = _MOST.get(name)
    if most is not None and number > most:
        raise errors.StartupError(f"store URL: {name} must be at most {most:,.0f}, not {value}")
    return number


def redact_url(url: str) -> str:
    """The URL for messages and logs: without its password and its other parameters (one may hold
    a secret, ``sslpassword``), but with its schema, the default's too, since deployments sharing
    one database differ only by it."""
    parts = urlsplit(url)
    schemas = [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if name == "schema"]
    query = urlencode({"schema": schemas[-1] if schemas else DEFAULT_SCHEMA})
    if parts.password is None:
        return urlunsplit(parts._replace(query=query))
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _within_bytes(page: str, order: str, sized: str) -> str:
    """``page``'s rows (a query ending ``LIMIT n``) up to and with the first whose ``sized`` column
    takes their bytes to a bound or past it, the statement's last parameter: the first row
    always comes. ``octet_length`` reads a stored value's size without detoasting it, and a
    value past the bound is never sent."""
    return (
        f"SELECT {order}, {sized} FROM (SELECT page.*, sum(octet_length({sized})) OVER (ORDER BY {order}"
        f" ROWS UNBOUNDED PRECEDING) - octet_length({sized}) AS before FROM ({page}) AS page) AS sized"
        f" WHERE before < %s ORDER BY {order}"
    )


def _ended(rows: list[tuple[Any, ...]], limit: int, most: int) -> bool:
    """Whether a batch of ``_within_bytes`` rows (the value last) was the end of its range: fewer
    rows than the LIMIT, and fewer bytes than the bound, which would have cut it there (a batch
    that ends the range at the bound exactly costs one more round trip, which finds nothing)."""
    return len(rows) < limit and sum(len(row[-1]) for row in rows) < most


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


def _execute(conn: psycopg.Connection[Any], query: bytes, params: tuple[Any, ...] | None = None) -> psycopg.Cursor[Any]:
    """``conn.execute`` on a cursor the connection keeps, for a statement of small parameters and
    at most one row, read before the next is sent (a get, a delete): ``Connection.execute``
    builds a cursor (and its adapters map) per statement, about a third of the CPU psycopg
    spends on a get. The cursor keeps its last parameters and result until the connection's
    next statement, at most one object per pooled connection this way; so never a page of a
    scan (up to ``scan_page`` objects) nor a write's held puts, and never a statement of a
    pipeline, whose cursors are read after it ends."""
    cur: psycopg.Cursor[Any] | None = getattr(conn, "_stigmer_cursor", None)
    if cur is None or cur.closed:
        cur = conn.cursor()
        conn._stigmer_cursor = cur  # type: ignore[attr-defined]
    return cur.execute(query, params)


def _lost(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` can run nothing more: broken, or closed after it did not answer."""
    return conn.broken or conn.closed


class _Retry(Exception):
    """A conflict PostgreSQL resolved by aborting us: run ``fn`` again."""


_OPERATOR_EVERY = 60.0
"""Seconds between two log lines of one operator's problem (a full disk, a missing privilege)."""
_told: dict[str, float] = {}


def _tell_operator(problem: str, message: str, heading: str = "the database refuses this daemon's statements") -> None:
    """Log, at most every minute per problem, what only the database's operator can fix: clients
    were told UNAVAILABLE, and the daemon's log (what an operator alerts on) said nothing."""
    now = time.monotonic()
    if now - _told.get(problem, -_OPERATOR_EVERY) >= _OPERATOR_EVERY:
        _told[problem] = now
        log.error("%s: %s", heading, message)


def _translate(exc: psycopg.Error) -> Exception:
    """What callers are told when the database refused or failed a statement.

    Only what the database does to a correct statement is mapped; an error
    left as it is (a syntax error, a constraint this engine should never
    break) is a bug in the engine and surfaces as one (INTERNAL). What only
    the database's operator can fix is logged too (``_tell_operator``).
    """
    found = _translated(exc)
    if isinstance(exc, pg_errors.DiskFull | pg_errors.ReadOnlySqlTransaction | pg_errors.InsufficientPrivilege) or (
        isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "")[:2] in ("53", "58")
    ):
        _tell_operator(type(exc).__name__, getattr(found, "message", str(found)))
    return found


def _translated(exc: psycopg.Error) -> Exception:
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return _Retry(str(exc))
    if isinstance(exc, NoAnswer):
        return errors.Unavailable(str(exc))
    if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
        return errors.Unavailable(f"the database did not answer in time ({exc.diag.message_primary or exc})")
    if isinstance(exc, psycopg_pool.PoolTimeout):  # ``PostgresStore._acquire`` says which of the two it was
        return errors.Unavailable("no database connection was free, nor could one be opened, in time")
    if isinstance(exc, pg_errors.DiskFull):
        return errors.ResourceExhausted(
            f"the disk holding the database is full ({_detail(exc)}): nothing was written; "
            "free space on the database server and retry (reads still work)",
            reason="DISK_FULL",
        )
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return errors.Unavailable(
            "the database refuses writes (a standby, or default_transaction_read_only is on): nothing was "
            "written; the daemon opens new connections, so writes work again once the database takes them"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return errors.Unavailable(
            f"the daemon's database role lacks a privilege ({_detail(exc)}): it needs USAGE on the schema, "
            "SELECT, INSERT, UPDATE and DELETE on its tables and EXECUTE on its function prune_events "
            "(which every role has unless revoked)"
        )
    if (exc.sqlstate or "")[:2] == "54":  # program limit exceeded: a key past what a btree entry holds
        return errors.InvalidArgument(  # as LMDB answers a key past its 511 bytes: the same write never fits
            f"a value of this write is too long for the database to store or index ({_detail(exc)}): "
            "nothing was written"
        )
    # A transaction ended for idling (25P03) is class 25, not an OperationalError, but the session is gone too.
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | pg_errors.IdleInTransactionSessionTimeout):
        if (exc.sqlstate or "")[:2] in ("53", "58"):  # out of memory or connections, an I/O error
            return errors.Unavailable(f"the database could not run this now: {_detail(exc)}")
        return _connection_lost(exc)
    return exc  # anything else is a bug in this engine: let it surface as one


_ENDED_BECAUSE = {
    "25P03": "its transaction sent nothing for longer than idle_in_transaction_timeout_ms (was this daemon "
    "paused or stalled?), so nothing of it was committed",
    "57P05": "it sent nothing for longer than the database's idle_session_timeout",
    "57P01": "an administrator ended it, or the database is shutting down",
    "57P02": "the database server is restarting after a crash",
}
"""Why the server ended a session, by the SQLSTATE it sent as it did."""


def _connection_lost(exc: psycopg.Error) -> errors.Unavailable:
    """UNAVAILABLE (a retry may work) for a connection that failed. Only a connection that could not
    be opened says the database is unreachable: one the server closed while in use (a transaction
    idle past the timeout of a daemon paused under SIGSTOP, an administrator's terminate) tells
    nothing of the database, which may be answering every other connection."""
    detail = _detail(exc)
    if isinstance(exc, pg_errors.ConnectionTimeout) or detail.startswith("connection failed"):
        # libpq's words name the database's host and port (and its user): the operator's log gets
        # them, a caller (any token, or none yet checked: a token's check reads the database) not
        _tell_operator("unreachable", detail, "calls are answered UNAVAILABLE: the database is unreachable")
        return errors.Unavailable(
            "the database is unreachable: the daemon could not open a connection to it (its log says why); retry"
        )
    why = _ENDED_BECAUSE.get(exc.sqlstate or "")
    if why is not None:
        return errors.Unavailable(f"the database ended this call's connection: {why}; retry (on a new connection)")
    return errors.Unavailable(
        f"this call's connection to the database was lost ({detail}); retry: the daemon opens a new one "
        "(while none can be opened, calls say the database is unreachable)"
    )


def _drop_after_pipeline(conn: psycopg.Connection[Any]) -> None:
    """Close a connection on which a pipeline failed (the pool drops a closed one it gets back).
    psycopg takes a statement it asked the server to prepare in a pipeline (at its
    ``prepare_threshold``th run) as prepared even when the pipeline was aborted before the server
    got to it, and from then on runs that statement by a name the server does not know, every
    time, on that connection (InvalidSqlStatementName)."""
    _close_on_purpose(conn)


def _commit_unknown(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether a transaction whose COMMIT went in a pipeline that raised ``exc`` may have been
    committed. Only an error the server reported for one of its statements says it was not. A
    backend told to exit (an administrator's terminate, a shutdown) finishes a commit in progress
    first, then sends a FATAL error, even in place of the answer that follows COMMIT's, and psycopg
    may raise an error of its own (no SQLSTATE) before it sees the connection close. Run again, or
    told to retry, such a write would be made twice."""
    if _lost(conn):
        return True
    if isinstance(exc, pg_errors.PipelineAborted):  # an earlier statement of the pipeline failed
        return False
    state = exc.sqlstate
    if state is None:
        return True
    severity = exc.diag.severity_nonlocalized or exc.diag.severity
    return severity in ("FATAL", "PANIC") or state[:2] == "08" or state.startswith("57P") or state == "40003"


def _why_unknown(exc: psycopg.Error) -> str:
    if isinstance(exc, NoAnswer):
        return str(exc)
    why = _ENDED_BECAUSE.get(exc.sqlstate or "")
    if why is not None:
        return f"the database ended the connection ({why})"
    return f"the database connection broke ({_detail(exc)})"


def _unusable(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must not serve again though it is open:
    one that began read-only (a standby, or the database's default while it was set)
    stays read-only for its whole session."""
    cause = exc.__cause__ if isinstance(exc, errors.StigmerError) else exc
    return isinstance(cause, pg_errors.ReadOnlySqlTransaction)


class _Reader:
    """A snapshot on one pooled connection.

    A strict reader's transaction begins with its first query. A restartable
    one (``read(restartable=True)``) answers its first ``LOOSE_QUERIES``
    queries as single statements outside any transaction (a statement is a
    snapshot of its own), each also reading the ``meta`` row's revision and
    write count; a third query begins the transaction. While every answer
    carries the same pair, every one saw the same committed writes: writers
    take turns on that row and every commit that changed anything bumps the
    count, so a snapshot sees the first *n* writers for some *n*, and the pair
    names *n*. A different pair raises ``SnapshotMoved``. A get then costs one
    round trip where a transaction costs three (BEGIN, the query, ROLLBACK).
    """

    __slots__ = ("_began", "_conn", "_held", "_loose", "_store", "_token")

    _BEGIN = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any], loose: int = 0) -> None:
        self._store = store
        self._conn = conn
        self._held = True
        self._began = False
        self._loose = loose
        """Queries this reader may still answer outside a transaction."""
        self._token: tuple[int, int] | None = None
        """(revision, writes) every answer so far saw."""

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._store._release(self._conn, self._began)

    def _seen(self, revision: int, writes: int) -> None:
        token = (int(revision), int(writes))
        if self._token is None:
            self._token = token
        elif token != self._token:
            raise SnapshotMoved(f"revision {self._token[0]} moved to {token[0]} between two queries of one read")

    def _rows(
        self, query: bytes, params: tuple[Any, ...], one: bool = False, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of ``query`` inside the transaction, begun here if need be; ``one``: at most
        one row, sent on the connection's kept cursor (``_execute``); ``prepare``: psycopg's."""
        if self._began:
            try:
                if one:
                    return _execute(self._conn, query, params).fetchall()
                return self._conn.execute(query, params, prepare=prepare).fetchall()
            except psycopg.Error as exc:
                raise self._store._translate(exc) from exc
        return self._on_fresh_connection(lambda: self._begin_with(query, params, one, prepare))

    def _begin_with(
        self, query: bytes, params: tuple[Any, ...], one: bool, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """BEGIN with the token (if loose answers came first), then ``query``: two round trips.

        Not one pipeline of the three: psycopg ends a pipeline with a flush request after its
        Sync, after which the server does not start ``idle_in_transaction_timeout``, so a daemon
        paused right after it would keep the snapshot open (and its tables' share locks, which a
        migration's ``ALTER TABLE`` waits for, every other daemon's statements then waiting
        behind that) until it woke. ``BEGIN`` and the token go as one simple-protocol statement.
        """
        conn = self._conn
        self._began = True  # from here on, releasing the connection rolls back whatever began
        if self._token is None:
            conn.execute(self._BEGIN, prepare=False)
        else:
            cur = conn.execute(self._BEGIN + b"; " + self._store._sql_token, prepare=False)
            cur.nextset()
            row = cur.fetchone()
            assert row is not None
            self._seen(*row)
        return (_execute(conn, query, params) if one else conn.execute(query, params, prepare=prepare)).fetchall()

    def _loose_rows(
        self, loose: bytes, query: bytes, params: tuple[Any, ...], one: bool = False
    ) -> list[tuple[Any, ...]]:
        """``query``'s rows; outside a transaction while this reader may, through
        ``loose``: the same query joined to the ``meta`` row, whose first two
        columns are the token and whose third is NULL on the row of no result."""
        if self._began or self._loose <= 0:
            return self._rows(query, params, one)
        self._loose -= 1
        rows = self._on_fresh_connection(
            lambda: (_execute(self._conn, loose, params) if one else self._conn.execute(loose, params)).fetchall()
        )
        self._seen(rows[0][0], rows[0][1])
        return [row[2:] for row in rows if row[2] is not None]

    def _on_fresh_connection(self, run: Callable[[], list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        """``run``, again on a fresh connection if the pooled one had died while idle
        (a database restart) and nothing had been read on it yet."""
        try:
            try:
                return run()
            except psycopg.OperationalError as exc:
                if isinstance(exc, NoAnswer) or not self._conn.broken or self._token is not None:
                    raise
                self._store._pool.putconn(self._conn)
                self._held = False
                self._conn = self._store._replace_broken()
                self._held = True
                return run()
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc

    @property
    def revision(self) -> int:
        if self._token is not None:
            return self._token[0]  # every answer so far saw this revision
        if self._began or self._loose <= 0:
            return int(self._rows(self._store._sql_revision, ())[0][0])
        self._loose -= 1
        row = self._on_fresh_connection(lambda: _execute(self._conn, self._store._sql_token).fetchall())[0]
        self._seen(*row)
        return int(row[0])

    def get(self, key: bytes) -> bytes | None:
        store = self._store
        rows = self._loose_rows(store._sql_get_loose, store._sql_get, (key,), one=True)
        return bytes(rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One statement for them all: a list page read through an index gets its objects this
        way, where a get each was a round trip each (100 for a page)."""
        if len(keys) < 2:
            return [self.get(key) for key in keys]
        store = self._store
        rows = self._loose_rows(store._sql_get_many_loose, store._sql_get_many, (list(dict.fromkeys(keys)),))
        found = {bytes(key): bytes(value) for key, value in rows}
        return [found.get(key) for key in keys]

    def scan(self, prefix: bytes, *, after: bytes = b"", first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Keys in byte order, as LMDB would list them: the revision and the event
        log live in tables of their own but appear under ``m/revision`` and ``e/``."""
        extra: list[Iterator[tuple[bytes, bytes]]] = []
        if keys.EVENTS.startswith(prefix) or prefix.startswith(keys.EVENTS):
            extra.append(self._event_entries(prefix, after))
        if keys.REVISION.startswith(prefix) and after < keys.REVISION:
            extra.append(iter([(keys.REVISION, self.revision.to_bytes(8, "big"))]))
        if extra:
            yield from heapq.merge(self._scan_kv(prefix, after, first), *extra)
        else:
            yield from self._scan_kv(prefix, after, first)

    def _event_entries(self, prefix: bytes, after: bytes) -> Iterator[tuple[bytes, bytes]]:
        store = self._store
        revision, seq = 0, -1
        page, most = store.settings.scan_page, store.settings.scan_bytes
        while True:
            rows = self._rows(store._sql_events, (revision, revision, seq, page, most))
            for rev, row_seq, payload in rows:
                key = keys.event_key(int(rev), int(row_seq))
                if key.startswith(prefix) and key > after:
                    yield key, bytes(payload)
            if _ended(rows, page, most):
                return
            revision, seq = int(rows[-1][0]), int(rows[-1][1])

    def _scan_kv(self, prefix: bytes, after: bytes, first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        store = self._store
        end = _prefix_end(prefix)
        start, inclusive = (after, False) if after and after >= prefix else (prefix, True)
        full, most = store.settings.scan_page, store.settings.scan_bytes
        page = min(first, full) if first > 0 else full
        while True:
            if end is None:
                name = "scan_from_ge" if inclusive else "scan_from_gt"
                params: tuple[Any, ...] = (start, page, most)
            else:
                name = "scan_ge" if inclusive else "scan_gt"
                params = (start, end, page, most)
            loose, strict = store._sql_scans[name]
            rows = self._loose_rows(loose, strict, params)
            for key, value in rows:
                yield bytes(key), bytes(value)
            if _ended(rows, page, most):
                return
            start, inclusive, page = bytes(rows[-1][0]), False, full

    def events(
        self, after_revision: int, partitions: Collection[str] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        store = self._store
        revision, seq = after_revision + 1, -1
        page, most = store.settings.scan_page, store.settings.scan_bytes
        parts = None if partitions is None else sorted({"", *partitions})
        while True:
            if parts is None:
                rows = self._rows(store._sql_events, (revision, revision, seq, page, most))
            else:
                # Planned with the partitions' values each time (never prepared): a plan made for
                # any partition walks the primary key, passing every other org's events one by one.
                query = store.part_events_sql(len(parts))
                params = [value for part in parts for value in (part, revision, revision, seq, page)]
                rows = self._rows(query, (*params, page, most), prepare=False)
            for rev, _, payload in rows:
                yield int(rev), bytes(payload)
            if _ended(rows, page, most):
                return
            revision, seq = int(rows[-1][0]), int(rows[-1][1])

    def oldest_event_revision(self) -> int:
        rows = self._rows(self._store._sql_oldest_event, ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        store = self._store
        if partitions is None:
            rows = self._rows(store._sql_compacted_all, ())
        else:
            rows = self._rows(store._sql_compacted, (list(partitions),))
        return int(rows[0][0]) if rows else 0


@attrs.define
class _Log:
    """What a write transaction knows of the event log, from the revision-lock statement on.

    ``oldest`` may be older than the log is (the lock statement's snapshot can
    predate a commit it waited for): then a commit asks the prune to look and it
    finds less, never drops what it should keep; a log seen empty that no
    longer is leaves its pruning by age to the next commit. ``bytes``,
    ``revisions`` and ``compacted`` come from the locked row itself, so they
    are exact, and the commit writes them back.

    ``parts`` holds what the appends added to each partition since
    ``event_parts`` was last written: the commit writes it in one statement,
    and so does a prune before it picks, so a commit pays one statement for
    its partitions' counts however many revisions and events it has.
    """

    bytes: int
    revisions: int
    """Revisions the log holds."""
    compacted: int
    """The newest revision pruned, of any partition."""
    oldest: int
    """Revision of the oldest event (0: the log is empty)."""
    oldest_at: datetime.datetime | None
    now: datetime.datetime
    """The database's clock when the transaction took the revision lock."""
    keep: EventRetention
    """The bounds this commit prunes by: the schema's (``meta.retention_*``) when recorded."""
    parts: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    """Per partition, (revisions, bytes) added since its ``event_parts`` row was written."""

    def copy(self) -> _Log:
        return attrs.evolve(self, parts=dict(self.parts))

    def count(self, part: str, revisions: int, size: int) -> None:
        held, total = self.parts.get(part, (0, 0))
        self.parts[part] = (held + revisions, total + size)

    def counts(self) -> tuple[list[str], list[int], list[int]] | None:
        """``parts`` as the arrays of ``_sql_count_parts`` (None: nothing to write)."""
        changed = [(part, n, size) for part, (n, size) in self.parts.items() if n or size]
        if not changed:
            return None
        return [p for p, _, _ in changed], [n for _, n, _ in changed], [b for _, _, b in changed]

    def over(self, keep: EventRetention) -> bool:
        """Whether the log is past a bound, before a commit appends a revision to it."""
        if not self.revisions:
            return False
        return self.revisions >= keep.max_revisions or self.bytes > keep.max_bytes or self.aging(keep)

    def age_floor(self, keep: EventRetention) -> datetime.datetime:
        return self.now - datetime.timedelta(seconds=keep.max_age_seconds)

    def aging(self, keep: EventRetention) -> bool:
        """Whether the oldest event may be past the age bound (the real one is as old or newer)."""
        return self.oldest_at is not None and self.oldest_at < self.age_floor(keep)


class _Writer(_Reader):
    """Inside a READ COMMITTED transaction that holds the revision row lock.

    Every statement is a round trip with the revision lock held, so round
    trips, not CPU, set how fast the whole schema takes writes (an Agent
    create sent eleven puts, two appends and seven gets). Puts and event
    appends wait in ``_puts`` and ``_appends`` and go to the database in one
    statement: with the commit, for all the callers of a batch that run in one
    transaction (``take_held``), or when ``fn`` returns, for a caller under a
    savepoint (``flush``); and before a read that could see them (a scan, a
    read of the event log) or a prune. A get is answered from ``_puts`` or
    from ``_got``, what this transaction read already: no other writer can
    change a row while this one holds the revision lock, and a delete goes out
    at once and is remembered there. An error of a statement held until the
    commit runs the batch again with savepoints, where it is raised inside its
    own ``fn``'s run.

    Not a pipeline: psycopg ends one with a flush request after its Sync,
    after which the server does not start ``idle_in_transaction_timeout``
    again, so a daemon paused next would hold the revision lock for good.
    For the same reason the transaction begins with one simple-protocol
    statement (``BEGIN`` and the revision lock), not a pipeline of two.
    """

    __slots__ = (
        "_appends",
        "_base",
        "_callbacks",
        "_got",
        "_log",
        "_part",
        "_part_bytes",
        "_puts",
        "_revision",
        "_seq",
        "_wrote",
        "appended",
    )

    def __init__(
        self,
        store: PostgresStore,
        conn: psycopg.Connection[Any],
        base: int,
        tally: _Log,
        known: dict[bytes, bytes | None],
        puts: dict[bytes, bytes],
        appends: list[tuple[int, int, bytes, str]],
    ) -> None:
        super().__init__(store, conn)
        self._began = True
        self._base = base
        self._log = tally
        self._revision = 0
        self._seq = 0
        self._part = ""
        """The partition of this transaction's revision: its first event's, or the shared one."""
        self._part_bytes = 0
        """Bytes of this transaction's events so far."""
        self._wrote = False
        self._puts = puts
        """Puts not sent yet, by key (a later put of a key replaces the earlier one's value);
        shared with the batch's other callers while they run in one transaction (``_run_batch``)."""
        self._appends = appends
        """Events not sent yet: revision, seq, payload, partition (shared as ``_puts`` is)."""
        self._got = known
        """What gets of this transaction read (or the batch read ahead for it), and what it
        deleted (None), by key."""
        self._callbacks: list[Callable[[], None]] = []
        self.appended: list[tuple[int, bytes]] = []
        """This caller's events, for the store's follower (``HandsOverEvents``): a later caller of
        the same batch may prune them before the commit makes them visible."""

    @property
    def revision(self) -> int:
        return self._revision or self._base

    def put(self, key: bytes, value: bytes) -> None:
        self._wrote = True
        self._puts[key] = value

    def get(self, key: bytes) -> bytes | None:
        if key in self._puts:
            return self._puts[key]
        if key in self._got:
            return self._got[key]
        rows = _Reader._rows(self, self._store._sql_get, (key,), one=True)  # a row no waiting put touches
        found = self._got[key] = bytes(rows[0][0]) if rows else None
        return found

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One statement for the keys this write has neither put nor read."""
        puts, got = self._puts, self._got
        wanted = [key for key in dict.fromkeys(keys) if key not in puts and key not in got]
        if len(wanted) > 1:
            rows = _Reader._rows(self, self._store._sql_get_many, (wanted,))  # rows no waiting put touches
            found = {bytes(key): bytes(value) for key, value in rows}
            for key in wanted:
                got[key] = found.get(key)
        return [self.get(key) for key in keys]

    def delete(self, key: bytes) -> bool:
        self._wrote = True
        waiting = self._puts.pop(key, None) is not None
        if not waiting and key in self._got and self._got[key] is None:
            return False  # read (or deleted) here as absent, and no other writer can have added it
        try:
            cur = _execute(self._conn, self._store._sql_delete, (key,))
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc
        self._got[key] = None
        return waiting or cur.rowcount > 0

    def _rows_none(self, query: bytes, params: tuple[Any, ...]) -> None:
        try:
            self._conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc

    def _rows(
        self, query: bytes, params: tuple[Any, ...], one: bool = False, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        self.flush()
        return super()._rows(query, params, one, prepare)

    def flush(self) -> None:
        """Send the puts and appends not sent yet, in one statement."""
        held = self.take_held()
        if held is not None:
            try:
                self._conn.execute(*held)
            except psycopg.Error as exc:
                raise self._store._translate(exc) from exc

    def take_held(self) -> tuple[bytes, tuple[Any, ...]] | None:
        """The statement that sends the puts and appends not sent yet, which are then no longer
        held (emptied in place: the batch's other callers may share them)."""
        puts, appends = self._puts, self._appends
        if not puts and not appends:
            return None
        self._got.update(puts)
        store = self._store
        query: bytes
        params: tuple[Any, ...]
        if not appends:
            query, params = (
                (store._sql_put, next(iter(puts.items())))
                if len(puts) == 1
                else (store._sql_put_many, (list(puts), list(puts.values())))
            )
        elif not puts and len(appends) == 1:
            query, params = store._sql_append, appends[0]
        else:
            revisions, seqs, payloads, parts = (list(column) for column in zip(*appends, strict=True))
            events = (revisions, seqs, payloads, parts)
            query = store._sql_put_and_append if puts else store._sql_append_many
            params = (list(puts), list(puts.values()), *events) if puts else events
        puts.clear()
        appends.clear()
        return query, params

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        if partitions is None:
            return self._log.compacted  # written to ``meta`` only at commit
        return super().compacted_through(partitions)

    def write_revision(self) -> int:
        if not self._revision:
            self._revision = self._base + 1
        return self._revision

    def forget_partition(self, partition: str) -> int:
        keys.check_partition(partition)
        if not partition:
            raise errors.InvalidArgument("the shared partition of the event log cannot be forgotten")
        self._wrote = True
        rows = self._rows(self._store._sql_forget_part, (partition, partition, self.revision))
        revisions, size, newest = (int(value) for value in rows[0])
        if revisions:
            tally = self._log
            tally.revisions = max(tally.revisions - revisions, 0)
            tally.bytes = max(tally.bytes - size, 0)
            tally.compacted = max(tally.compacted, newest)
            tally.count(partition, -revisions, -size)  # event_parts' counts, written at commit
        return revisions

    def append_event(self, payload: bytes, partition: str = "") -> int:
        keys.check_partition(partition)
        self._wrote = True
        revision = self.write_revision()
        store, tally, size = self._store, self._log, len(payload)
        if self._seq == 0:
            if tally.over(tally.keep):
                self._prune_and_append(revision, payload, partition)
            else:
                self._appends.append((revision, 0, payload, partition))
            if not tally.oldest:
                tally.oldest, tally.oldest_at = revision, tally.now
            self._part = partition
            tally.revisions += 1
            tally.count(partition, 1, size)
        elif partition != self._part and self._part:
            self.flush()  # the events it moves to the shared partition must be in the table
            self._rows_none(store._sql_share_and_append, (revision, revision, self._seq, payload))
            tally.count(self._part, -1, -self._part_bytes)
            tally.count("", 1, self._part_bytes + size)
            self._part = ""
        else:
            self._appends.append((revision, self._seq, payload, self._part))
            tally.count(self._part, 0, size)
        tally.bytes += size
        self._part_bytes += size
        self._seq += 1
        self.appended.append((revision, payload))
        return revision

    def _prune_and_append(self, revision: int, payload: bytes, partition: str) -> None:
        """Bring the partitions' counts up to date and prune, in one round trip, then append.

        The append goes alone, after the pipeline, so the transaction's last message is not
        a pipeline's flush request, after which the server would not end it if this daemon
        then paused holding the revision lock (``_Writer``)."""
        self.flush()  # the events it may prune (earlier callers' of the batch too) must be in the table
        store, tally = self._store, self._log
        keep = tally.keep
        params = {
            "cap": PRUNE_PER_COMMIT,
            "max_revisions": keep.max_revisions,
            "max_bytes": keep.max_bytes,
            "age_floor": tally.age_floor(keep),
            "aging": tally.aging(keep),
            "held": tally.revisions,
            "total": tally.bytes,
        }
        counts = tally.counts()
        conn = self._conn
        try:
            with conn.pipeline():
                if counts is not None:
                    conn.execute(store._sql_count_parts, counts)
                cur = conn.execute(store._sql_prune, params)
        except psycopg.Error as exc:
            _drop_after_pipeline(conn)  # the batch fails with it: nothing of it was committed
            raise self._store._translate(exc) from exc
        try:
            row = cur.fetchone()
            conn.execute(store._sql_append, (revision, 0, payload, partition))
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc
        assert row is not None
        tally.parts.clear()
        _, revisions, pruned, through, oldest, oldest_at = row
        tally.bytes = max(tally.bytes - int(pruned), 0)
        tally.revisions = max(tally.revisions - int(revisions), 0)
        tally.compacted = max(tally.compacted, int(through))
        if oldest is None:  # everything before this revision went
            tally.oldest, tally.oldest_at = revision, tally.now
        else:
            tally.oldest, tally.oldest_at = int(oldest), oldest_at

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)


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


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class PostgresStore:
    """Store in the tables of one schema of a PostgreSQL database (see ``PostgresSettings``)."""

    def __init__(
        self,
        url: str,
        *,
        durable: bool = True,
        retention: EventRetention | None = None,
        event_retention: int | None = None,
        settings: PostgresSettings | None = None,
    ) -> None:
        """``retention`` bounds the event log; ``event_retention`` alone sets its revision count.

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
        self._sql_watch = (
            f"SELECT revision, (SELECT max(version) FROM {s}.schema_version) FROM {s}.meta WHERE id = 1"
        ).encode()
        self._sql_lock_revision = (
            f"SELECT revision, log_bytes, event_revisions, compacted,"
            f" (SELECT revision FROM {s}.events ORDER BY revision, seq LIMIT 1),"
            f" (SELECT committed_at FROM {s}.events ORDER BY revision, seq LIMIT 1),"
            " clock_timestamp(), retention_revisions, retention_bytes, retention_seconds"
            f" FROM {s}.meta WHERE id = 1 FOR UPDATE"
        ).encode()
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
        ranges = {
            "scan_ge": "key >= %s AND key < %s",
            "scan_gt": "key > %s AND key < %s",
            "scan_from_ge": "key >= %s",
            "scan_from_gt": "key > %s",
        }
        self._sql_scans: dict[str, tuple[bytes, bytes]] = {}
        for name, where in ranges.items():
            strict = _within_bytes(f"SELECT key, value FROM {s}.kv WHERE {where} ORDER BY key LIMIT %s", "key", "value")
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
        self._sql_events = _within_bytes(
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
        self._openings = Openings()
        self._waits = Waits()
        """The pool's round trips under way: given up once the database is found not answering."""
        self._connection_class = bounded_class(self.settings.answer_seconds, self._openings, self._waits)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": options,
            "application_name": "stigmer",
        }
        try:
            with self._connection_class.connect(self.settings.conninfo, **self._connect_kwargs) as conn:
                if migrate(conn, self.schema) == 0:
                    self._tell_new_schema(conn)
                row = conn.execute(self._sql_revision).fetchone()
                self._settle_retention(conn, record=given)
        except psycopg.OperationalError as exc:
            raise errors.StartupError(f"cannot reach the database at {self.url}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:  # e.g. a role that may not create the schema
            raise errors.StartupError(
                f"cannot create or migrate schema {self.schema!r} at {self.url}: {str(exc).strip()}"
            ) from exc
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
        self._reachable = True
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
        """``_translate``, but a statement failing because a newer release changed the schema
        under this daemon is refused saying so (``postgres_version``), never answered INTERNAL."""
        return self._version.refusal(exc) or _translate(exc)

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
            raise _translate(exc) from exc

    def _not_answering(self) -> errors.Unavailable:
        """What a call is told at once while the listener finds the database not answering: such a
        call waited for a connection (``pool_timeout``) and then for an answer (``answer_timeout_ms``,
        35 s), holding a server thread and a connection for a client that gave up long before, so
        the daemon came back from a stall with a backlog of calls nobody waited for. A client told
        UNAVAILABLE retries with its backoff; the listener reads every ``UNREACHABLE_POLL_SECONDS``,
        so calls are taken again within about a second of the database's first answer."""
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
            error = self._openings.error
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
        if in_transaction and not _lost(conn):
            with contextlib.suppress(psycopg.Error):  # the pool discards a broken connection on return
                conn.execute(b"ROLLBACK")
        self._pool.putconn(conn)

    def _discard_all(self, conn: psycopg.Connection[Any]) -> None:
        """Close ``conn`` (the pool drops a closed connection it gets back) and have the pool
        replace the rest: the idle ones began in the same state as the one that failed."""
        _close_on_purpose(conn)
        self._pool.drain()

    def _replace_broken(self) -> psycopg.Connection[Any]:
        """A fresh connection once a broken one was returned: check the idle ones
        first, since after a database restart they are all dead."""
        self._pool.check()
        return self._acquire()

    # -- reads -------------------------------------------------------------
    def _tell_new_schema(self, conn: psycopg.Connection[Any]) -> None:
        """A daemon given a misspelt schema made a new, empty one and answered every token as
        not valid, with nothing in its log to say why: it now says it made one, and names the
        database's other schemas of this engine."""
        others = other_schemas(conn, self.schema)
        named = ", ".join(repr(name) for name in others)
        log.warning(
            "created schema %r at %s: it held no stigmer tables, so this daemon starts a new, empty deployment%s. "
            "A daemon meant to join an existing one must name its schema (schema= in the store URL)",
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
            found = _within_bytes(
                f"SELECT revision, seq, payload FROM ({union}) AS e ORDER BY revision, seq LIMIT %s",
                "revision, seq",
                "payload",
            ).encode()
            self._sql_part_events[count] = found
        return found

    def read(self, *, restartable: bool = False) -> _Reader:
        return _Reader(self, self._acquire(), LOOSE_QUERIES if restartable else 0)

    # -- writes ------------------------------------------------------------
    def transact(self, fn: Callable[[Any], T]) -> T:
        return self._writes.transact(fn)

    def _commit_batch(self, batch: list[Pending]) -> None:
        fresh_connection_tried = False
        for _ in range(_CONFLICT_ATTEMPTS):
            try:
                try:
                    self._run_batch(batch, savepoints=False)
                except _CallerFailed:  # not a conflict: run it again at once, each caller under a savepoint
                    self._run_batch(batch, savepoints=True)
                return
            except _Retry:
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
                if _unusable(exc) and not fresh_connection_tried:
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
        try:
            try:
                # one simple-protocol statement, not a pipeline (see ``_Writer``): the lock
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
            tally = _Log(
                bytes=int(row[1]),
                revisions=int(row[2]),
                compacted=int(row[3]),
                oldest=int(row[4] or 0),
                oldest_at=row[5],
                now=row[6],
                keep=self._recorded_retention(row[7], row[8], row[9]),
            )
            shared = savepoints and len(batch) > 1
            # Without savepoints the callers run in one transaction: their puts and appends are
            # held together and go with the commit, one round trip for the batch's writes (if that
            # statement fails, the batch runs again with savepoints, each caller's writes sent as
            # its ``fn`` returns, so the failure is its caller's alone).
            together = not savepoints
            held_puts: dict[bytes, bytes] = {}
            held_appends: list[tuple[int, int, bytes, str]] = []
            writer: _Writer | None = None
            wrote = False  # a rolled-back caller's writes count too: a needless bump only costs a reader a retry
            handed: list[tuple[int, bytes]] = []
            for pending in batch:
                pending.error = None
                pending.result = None
                pending.callbacks = []
                if shared:
                    conn.execute(b"SAVEPOINT stigmer_call")
                if together:
                    writer = _Writer(self, conn, revision, tally.copy(), known, held_puts, held_appends)
                else:
                    writer = _Writer(self, conn, revision, tally.copy(), dict(known), {}, [])
                try:
                    pending.result = pending.fn(writer)
                    if not together:
                        writer.flush()
                except Exception as exc:
                    wrote = wrote or writer._wrote
                    if _lost(conn) or isinstance(exc, _Retry) or _unusable(exc):
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
            held = writer.take_held() if together and writer is not None else None
            try:
                with conn.pipeline():
                    if held is not None:
                        conn.execute(*held)
                    counts = tally.counts()
                    if counts is not None:
                        conn.execute(self._sql_count_parts, counts)
                    if revision != base or wrote:
                        conn.execute(self._sql_set_revision, (revision, tally.bytes, tally.revisions, tally.compacted))
                    if revision != base:
                        conn.execute(b"SELECT pg_notify(%s, %s)", (self.channel, str(revision)))
                    conn.execute(b"COMMIT")
            except psycopg.Error as exc:
                unknown = _commit_unknown(conn, exc)
                _drop_after_pipeline(conn)  # and if the outcome is unknown, its state is too
                if unknown:
                    raise errors.Unavailable(
                        f"{_why_unknown(exc)} while committing; the write may or may not have been applied"
                    ) from exc
                if held is not None and len(batch) > 1:
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
            if not _lost(conn) and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
            if _unusable(exc):
                self._discard_all(conn)
            raise
        finally:
            self._pool.putconn(conn)
            if holding:
                self._hold(None)
        self.commits += 1
        if not self._reachable:  # a commit is the database answering
            self._set_reachable(True)
        if revision != base:
            self._advance(revision)

    def read_ahead(self, keys: Collection[bytes]) -> None:
        """Fetch ``keys`` in the statement that begins each write and takes the revision lock
        (``ReadsAhead``): a write's gets of them are then answered without a round trip of their
        own with the lock held. The keys go as literals, since a simple-protocol statement takes
        no parameters (see ``_Writer``); they are the daemon's own (kind records), never a caller's."""
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
            try:
                with self._connection_class.connect(self.settings.conninfo, **self._connect_kwargs) as conn:
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
                        quiet = LISTEN_SECONDS if self._reachable else min(LISTEN_SECONDS, UNREACHABLE_POLL_SECONDS)
                        notices = list(conn.notifies(timeout=quiet, stop_after=1))
                        if self._stop.is_set():
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
            self._stop.wait(backoff)
            backoff = min(backoff * 2, UNREACHABLE_POLL_SECONDS)  # calls are refused until it reconnects

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
                    row = answered_within(conn, bound - (time.monotonic() - started), self._sql_watch)
            except psycopg_pool.PoolTimeout:
                if listening is None:
                    raise
                row = answered_within(listening, max(bound - (time.monotonic() - started), bound / 2), self._sql_watch)
        except (psycopg.Error, psycopg_pool.PoolClosed) as exc:
            log.debug("store listener could not read the revision: %s", exc)
            if isinstance(exc, psycopg.Error) and schema_shaped(exc):
                self._version.refusal(exc)
            elif isinstance(exc, NoAnswer):  # a server that holds connections open and answers nothing
                self._set_reachable(False)
            return False
        self._set_reachable(True)
        if not row:
            return False
        revision = int(row[0])
        with self._revision_cond:
            moved = revision > self._revision
        self._watched(row)
        return moved

    def _watched(self, row: tuple[Any, ...]) -> None:
        """The listener's read (``_sql_watch``): the revision, and the schema's version."""
        self._advance(int(row[0]))
        self._version.seen(int(row[1] or 0))

    def on_reachability(self, callback: Callable[[bool], None]) -> None:
        with self._reachability_lock:
            self._reachability.append(callback)
            serving = self._serving
        if not serving:
            callback(False)

    def _set_reachable(self, reachable: bool) -> None:
        """Tell the health service when the database stops (or starts again) answering this daemon.

        Told it does not answer (at each of the listener's reads that gets no answer), the calls
        already waiting ``health_timeout_ms`` for one are given up: they would wait out
        ``answer_timeout_ms`` (35 s), holding a server thread and a connection each, while the calls
        after them are refused at once (``_not_answering``)."""
        if not reachable:
            given_up = self._waits.give_up_older(self.settings.health_seconds)
            if given_up:
                log.warning("gave up %d call(s) waiting on the database for its answer", given_up)
        with self._reachability_lock:
            if reachable == self._reachable:
                return
            self._reachable = reachable
        if reachable:
            log.warning("the database at %s answers again", self.url)
        else:
            log.warning("the database at %s does not answer; the daemon reports NOT_SERVING until it does", self.url)
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
        self._pool.close()
        with self._revision_cond:
            self._revision_cond.notify_all()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CallerFailed(Exception):
    """A caller's ``fn`` failed in a batch run without savepoints: run it again with them."""


class _StaleConnection(Exception):
    """The pooled connection was dead before the transaction began."""
