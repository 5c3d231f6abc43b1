"""The PostgreSQL engine's connections: how long each waits for the database's answer.

TCP does not notice a database that stops answering (a stopped or hung server, a
path that drops packets): the kernel at the far end still acknowledges, or nothing
comes back at all, and a call would wait for ever. Each connection therefore waits
at most ``answer_seconds`` for any one round trip (``AnsweringConnection``), and,
once the daemon's listener finds the database not answering (its health turns
NOT_SERVING, ``health_timeout_ms``), the calls already waiting longer than that
are given up too, and so is any other once it has waited as long (``Waits``); they were held for ``answer_timeout_ms`` (35 s by
default), each with a server thread and a pooled connection, for clients that had
long given up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen

RV = TypeVar("RV")
log = logging.getLogger("stigmer_core.store.postgres_store")  # the engine's one logger name, as in postgres_faults


def detail(exc: BaseException) -> str:
    """The first line of what ``exc`` says: libpq's messages run on with hints and context."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class NoAnswer(psycopg.OperationalError):
    """The database left a round trip unanswered past its bound; the connection was closed."""


LOOK_SECONDS = 0.5
"""How often a connection waiting for an answer looks whether it was given up (``Waits``)."""


class _Wait:
    __slots__ = ("given_up", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.given_up: float | None = None
        """How long it had waited when it was given up; None while it is not."""


class Waits:
    """The round trips of one store's connections that wait for the database's answer now.

    ``give_up_older`` marks the waits begun at least so many seconds ago as given up; each
    waiting connection looks every ``LOOK_SECONDS`` (psycopg's wait resumes where it was, as
    psycopg itself resumes one after a cancel), then closes itself and raises ``NoAnswer``, as
    if its own bound had passed. The waiting thread does it all: no other thread touches a
    connection or its socket, whose descriptor may be another connection's by then.
    """

    def __init__(self) -> None:
        self._waits: dict[psycopg.Connection[Any], _Wait] = {}
        """No lock: each use is one of the dict's own operations, which are atomic. Entering and
        leaving cost a round trip 1.7 µs this way and 3.4 µs with a lock, where a get takes about
        170 µs of CPU."""
        self.why = ""
        """What the store found, when it is a lock on its tables (``postgres_locks``), for the
        calls it gives up: told only that the database did not answer, an operator looked for an
        outage that was not there."""
        self.limit: float | None = None
        """While the store finds the database not answering: how long a wait may go on before it
        gives itself up, at its next look. A call that began just before the database was found
        not answering had not waited that long yet, and waited on to the next finding (a failed
        reconnect, ``connect_timeout`` later) or its own ``answer_seconds``. None while it answers."""

    def not_answering(self, seconds: float, why: str = "") -> int:
        """The database does not answer (``why``: a lock on the store's tables, in words): every
        wait is given up once it is ``seconds`` old (those that are now, at once); how many were
        given up now."""
        self.why = why
        self.limit = seconds
        return self.give_up_older(seconds)

    def answering(self) -> None:
        self.limit = None
        self.why = ""

    def enter(self, conn: psycopg.Connection[Any]) -> _Wait:
        """``conn`` waits for an answer from now on (each round trip pays this: no context manager)."""
        wait = self._waits[conn] = _Wait(time.monotonic())
        return wait

    def leave(self, conn: psycopg.Connection[Any]) -> None:
        self._waits.pop(conn, None)

    def give_up_older(self, seconds: float) -> int:
        """Give up every wait begun ``seconds`` ago or earlier; how many there were."""
        now = time.monotonic()
        given_up = 0
        for wait in list(self._waits.values()):  # a copy taken at once: waits come and go meanwhile
            if wait.given_up is None and now - wait.since >= seconds:
                wait.given_up = now - wait.since
                given_up += 1
        return given_up

    def __len__(self) -> int:
        return len(self._waits)


class AnsweringConnection(psycopg.Connection[Any]):
    """A connection that waits at most ``answer_seconds`` for any one round trip.

    Every blocking step of a sync psycopg connection (a statement, a pipeline's
    sync, COMMIT, the pool's checks) goes through ``wait``. Past the bound the
    connection's state is unknown (a statement may still be running, or be
    committed, on the server), so it is closed: nothing more is sent on it and
    the pool drops it when it comes back. With ``waits``, a wait longer than
    ``LOOK_SECONDS`` looks that often whether the store gave it up (``Waits``).
    """

    answer_seconds: float = 35.0
    openings: Openings | None = None
    waits: Waits | None = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        if cls.openings is None:
            return super().connect(conninfo, **kwargs)
        with cls.openings.attempt():
            return super().connect(conninfo, **kwargs)

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:
            return super().wait(gen, interval, timeout)  # the caller's own wait (LISTEN): not an answer awaited
        bound = self.answer_seconds
        waits = self.waits
        if waits is None:
            try:
                return super().wait(gen, interval, bound)
            except pg_errors._WaitTimeout:  # psycopg's own (3.3.6+), raised by nothing else
                raise self._no_answer(f"the database did not answer within {bound:g} s") from None
        wait = waits.enter(self)
        deadline = wait.since + bound
        try:
            while True:
                try:
                    return super().wait(gen, interval, max(0.0, min(LOOK_SECONDS, deadline - time.monotonic())))
                except pg_errors._WaitTimeout:
                    limit = waits.limit
                    if wait.given_up is None and limit is not None and time.monotonic() - wait.since >= limit:
                        wait.given_up = time.monotonic() - wait.since
                        log.warning("gave up a call waiting %.1f s on the database for its answer", wait.given_up)
                    if wait.given_up is not None:
                        self._stigmer_closed_on_purpose = True  # the store logged it: the pool need not warn
                        found = f"finds {waits.why}" if waits.why else "finds it not answering"
                        raise self._no_answer(
                            f"the database did not answer for {time.monotonic() - wait.since:.1f} s, and the "
                            f"daemon {found} (its health is NOT_SERVING)"
                        ) from None
                    if time.monotonic() >= deadline:
                        raise self._no_answer(f"the database did not answer within {bound:g} s") from None
        finally:
            waits.leave(self)

    def _no_answer(self, why: str) -> NoAnswer:
        """Close the connection, whose state is unknown now, and say why."""
        self.close()
        return NoAnswer(f"{why}; its connection was closed")


def answered_within(conn: psycopg.Connection[Any], seconds: float, query: bytes) -> Any:
    """One row of ``query``, waiting at most ``seconds`` for it (``NoAnswer`` past that, the
    connection closed) rather than the connection's own ``answer_seconds``."""
    with within(conn, seconds):
        return conn.execute(query).fetchone()


@contextlib.contextmanager
def within(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """Each round trip of ``conn`` meanwhile waits at most ``seconds`` for its answer (``NoAnswer``
    past that, the connection closed), rather than the connection's own ``answer_seconds``."""
    kept = vars(conn).get("answer_seconds")  # the listener's connection has its own
    conn.answer_seconds = seconds  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if kept is None:
            del conn.answer_seconds  # type: ignore[attr-defined]
        else:
            conn.answer_seconds = kept  # type: ignore[attr-defined]


class Openings:
    """How the pool's attempts to open connections are going: what tells a database that
    cannot be reached (no connection opens) from a pool whose connections are all busy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.opening = 0
        """Attempts under way."""
        self.failed_at = float("-inf")
        """``time.monotonic()`` of the latest attempt that failed."""
        self.opened_at = float("-inf")
        """``time.monotonic()`` of the latest attempt that opened a connection."""
        self.error = ""

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        with self._lock:
            self.opening += 1
        try:
            yield
        except psycopg.Error as exc:
            with self._lock:
                self.failed_at, self.error = time.monotonic(), detail(exc)
            raise
        else:
            with self._lock:
                self.opened_at = time.monotonic()
        finally:
            with self._lock:
                self.opening -= 1

    def failing_since(self, started: float) -> bool:
        """Whether opening a connection failed after ``started``, an attempt is still under way, or
        the latest attempt failed: the pool waits between attempts after a failure, and a call
        that waited out such a pause in full was told the pool was busy (a loaded CI machine)."""
        with self._lock:
            return self.opening > 0 or self.failed_at >= started or self.failed_at > self.opened_at


def bounded_class(
    answer_seconds: float, openings: Openings | None = None, waits: Waits | None = None
) -> type[AnsweringConnection]:
    """A connection class of one store's: its bound, its openings and its waits."""
    attributes = {"answer_seconds": answer_seconds, "openings": openings, "waits": waits}
    return type("StigmerConnection", (AnsweringConnection,), attributes)
