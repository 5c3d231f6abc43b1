"""The PostgreSQL engine's faults: what callers are told when the database fails a statement.

A database refuses or fails a correct statement for many reasons (a full disk, a role short of a
privilege, a standby, a connection the server ended, one that stopped answering); each becomes
the framework's error that says what the caller can do (``translate``), and what only the
database's operator can fix is logged too, once a minute. The engine's reader, writer and store
share these, as they share how a connection that must not serve again is closed on purpose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from stigmer_core import errors
from stigmer_core.denied_log import DeniedLog
from stigmer_core.store.postgres_connection import NoAnswer
from stigmer_core.store.postgres_connection import detail as _detail

log = logging.getLogger("stigmer_core.store.postgres_store")
"""The store's logger: an operator reads the engine's faults under the one name, ``postgres_store``."""


class _QuietOnPurpose(logging.Filter):
    """psycopg_pool warns of every closed connection it gets back ("discarding closed
    connection"), as if it had broken; one this module closed on purpose is dropped as planned,
    and the warning would have an operator look for a fault that is not there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and getattr(args[0], "_stigmer_closed_on_purpose", False))


_OPERATOR_EVERY = 60.0
"""Seconds between two log lines of one operator's problem (a full disk, a missing privilege)."""


class FoldedWarnings(logging.Filter):
    """psycopg warns once per connection its pool drops or fails to open: a database restarted
    under load, or an administrator terminating backends, made hundreds of lines a minute, all
    alike, burying the daemon's own lines (NOT_SERVING, the reason the database is unreachable).
    Alike (one logger, one message template; what it names may differ) is written once per
    ``seconds``: the first as it comes, the next after the interval counting those left out."""

    def __init__(self, seconds: float = _OPERATOR_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.seconds = seconds
        self._clock = clock
        self._seen = DeniedLog(seconds, clock)

    def reset(self) -> None:
        """Forget every warning seen: the next of each kind is written as it comes."""
        self._seen = DeniedLog(self.seconds, self._clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:  # asked for with -v: every one
            return True
        left_out = self._seen.admit((record.name, str(record.msg), ""))
        if left_out is None:
            return False
        text = record.getMessage()
        if "\n" in text:  # libpq's hint on a line of its own ("\tIs the server running…"): one line, as logs are read
            record.msg, record.args = " ".join(part.strip() for part in text.splitlines() if part.strip()), None
        if left_out:
            record.msg = f"{record.msg} (and {left_out:,} more like it in the last {self.seconds:g} s)"
        return True


FOLDED = FoldedWarnings()
"""The one on psycopg's loggers (after ``_QuietOnPurpose``, so a connection closed on purpose is
not counted)."""
logging.getLogger("psycopg.pool").addFilter(_QuietOnPurpose())
for _name in ("psycopg.pool", "psycopg"):
    logging.getLogger(_name).addFilter(FOLDED)


def close_on_purpose(conn: psycopg.Connection[Any]) -> None:
    """Close ``conn`` before it goes back to the pool, which drops it (and, quietly, says nothing)."""
    conn._stigmer_closed_on_purpose = True  # type: ignore[attr-defined]
    conn.close()


def lost(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` can run nothing more: broken, or closed after it did not answer."""
    return conn.broken or conn.closed


class Retry(Exception):
    """A conflict PostgreSQL resolved by aborting us: run ``fn`` again."""


_told: dict[str, float] = {}


def _tell_operator(problem: str, message: str, heading: str = "the database refuses this daemon's statements") -> None:
    """Log, at most every minute per problem, what only the database's operator can fix: clients
    were told UNAVAILABLE, and the daemon's log (what an operator alerts on) said nothing."""
    now = time.monotonic()
    if now - _told.get(problem, -_OPERATOR_EVERY) >= _OPERATOR_EVERY:
        _told[problem] = now
        log.error("%s: %s", heading, message)


def translate(exc: psycopg.Error) -> Exception:
    """What callers are told when the database refused or failed a statement.

    Only what the database does to a correct statement is mapped; an error
    left as it is (a syntax error, a constraint this engine should never
    break) is a bug in the engine and surfaces as one (INTERNAL). What only
    the database's operator can fix is logged too (``_tell_operator``).
    """
    found = _translated(exc)
    said = getattr(found, "message", str(found))
    if (exc.sqlstate or "")[:2] == "XX":  # one a statement met, told apart by what the database said
        _tell_operator(
            f"{exc.sqlstate} {_primary(exc)[:60]}", said, "the database failed a statement with an error of its own"
        )
    elif isinstance(exc, pg_errors.DiskFull | pg_errors.ReadOnlySqlTransaction | pg_errors.InsufficientPrivilege) or (
        isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "")[:2] in ("53", "58")
    ):
        _tell_operator(type(exc).__name__, said)
    return found


def _primary(exc: psycopg.Error) -> str:
    """The database's own message, without the hints and context libpq adds after it."""
    return exc.diag.message_primary or _detail(exc)


def _translated(exc: psycopg.Error) -> Exception:
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return Retry(str(exc))
    if isinstance(exc, NoAnswer):
        return errors.Unavailable(str(exc))
    if isinstance(exc, pg_errors.QueryCanceled) and "user request" in _primary(exc):
        return errors.Unavailable(  # pg_cancel_backend: an administrator's doing, not a slow database
            f"the database cancelled this call's statement ({_primary(exc)}): nothing of it was committed; retry"
        )
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
    if (exc.sqlstate or "")[:2] == "XX":  # the database failed a correct statement itself: its operator's to see
        if _primary(exc).startswith(("could not extend file", "could not write")):
            return errors.ResourceExhausted(  # a file the database cannot grow (a full disk, a file size limit)
                f"the database could not store this write ({_detail(exc)}): nothing was written; its operator "
                "must make room for it on the database server, then retry (reads still work)",
                reason="DISK_FULL",
            )
        return errors.Unavailable(
            f"the database failed this call's statement with an internal error of its own ({_detail(exc)}): "
            "nothing of it was committed; its operator's log says more; retry"
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


def drop_after_pipeline(conn: psycopg.Connection[Any]) -> None:
    """Close a connection on which a pipeline failed (the pool drops a closed one it gets back).
    psycopg takes a statement it asked the server to prepare in a pipeline (at its
    ``prepare_threshold``th run) as prepared even when the pipeline was aborted before the server
    got to it, and from then on runs that statement by a name the server does not know, every
    time, on that connection (InvalidSqlStatementName)."""
    close_on_purpose(conn)


def commit_unknown(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether a transaction whose COMMIT went in a pipeline that raised ``exc`` may have been
    committed. Only an error the server reported for one of its statements says it was not. A
    backend told to exit (an administrator's terminate, a shutdown) finishes a commit in progress
    first, then sends a FATAL error, even in place of the answer that follows COMMIT's, and psycopg
    may raise an error of its own (no SQLSTATE) before it sees the connection close. Run again, or
    told to retry, such a write would be made twice."""
    if lost(conn):
        return True
    if isinstance(exc, pg_errors.PipelineAborted):  # an earlier statement of the pipeline failed
        return False
    state = exc.sqlstate
    if state is None:
        return True
    severity = exc.diag.severity_nonlocalized or exc.diag.severity
    return severity in ("FATAL", "PANIC") or state[:2] == "08" or state.startswith("57P") or state == "40003"


def why_unknown(exc: psycopg.Error) -> str:
    if isinstance(exc, NoAnswer):
        return str(exc)
    why = _ENDED_BECAUSE.get(exc.sqlstate or "")
    if why is not None:
        return f"the database ended the connection ({why})"
    return f"the database connection broke ({_detail(exc)})"


def unusable(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must not serve again though it is open:
    one that began read-only (a standby, or the database's default while it was set)
    stays read-only for its whole session."""
    cause = exc.__cause__ if isinstance(exc, errors.StigmerError) else exc
    return isinstance(cause, pg_errors.ReadOnlySqlTransaction)
