"""The PostgreSQL engine's settings: how a daemon uses its database, read from the store URL.

The query parameters of a ``postgresql://`` URL that are the daemon's own (the schema, the pool,
the timeouts, the scan pages) are taken out and checked here, at start, with the bounds past
which the server would refuse them; the rest go to libpq. ``redact_url`` is the URL as messages
and logs may show it.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict

from stigmer_core import errors
from stigmer_core.store.postgres_schema import check_schema_name

DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
ANSWER_GRACE_MS = 5_000
"""How much longer than ``statement_timeout_ms`` the daemon waits for an answer by default."""
DEFAULT_HEALTH_TIMEOUT_MS = 5000
"""How long the listener's revision read waits before the daemon reports NOT_SERVING, by default."""
DEFAULT_IDLE_IN_TRANSACTION_MS = 5000
"""How long a transaction may send nothing (``idle_in_transaction_timeout_ms``) by default."""

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
        libpq += [(name, value) for name, value in _LIBPQ_DEFAULTS.items() if name not in given]
        # %20 for a space, not urlencode's '+', which libpq's URI reading keeps as a '+' (options broke)
        conninfo = urlunsplit(parts._replace(query=urlencode(libpq, quote_via=quote)))
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
            raise errors.StartupError(
                f"store URL: need 1 <= pool_min <= pool_max, not pool_min {settings.pool_min} and pool_max "
                f"{settings.pool_max} (pool_min is 2 unless given: with pool_max=1, give pool_min=1 too)"
            )
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

_LIBPQ_DEFAULTS = {**_DEAD_PEER, "application_name": "stigmer"}
"""What the URL does not set itself: the dead-peer bounds, and the name ``pg_stat_activity`` shows
for the daemon's connections (one per daemon, ``application_name=stigmer-a``, tells them apart;
it was always ``stigmer``, whatever the URL said)."""

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
