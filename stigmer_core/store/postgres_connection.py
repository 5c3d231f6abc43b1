"""The PostgreSQL engine's connections: how long each waits for the database's answer.

TCP does not notice a database that stops answering (a stopped or hung server, a
path that drops packets): the kernel at the far end still acknowledges, or nothing
comes back at all, and a call would wait for ever. Each connection therefore waits
at most ``answer_seconds`` for any one round trip (``AnsweringConnection``), and,
once the daemon's listener finds the database not answering (its health turns
NOT_SERVING, ``health_timeout_ms``), the calls already waiting longer than that
are given up too (``Waits``): they were held for ``answer_timeout_ms`` (35 s by
default), each with a server thread and a pooled connection, for clients that had
long given up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen

RV = TypeVar("RV")


def detail(exc: BaseException) -> str:
    """The first line of what ``exc`` says: libpq's messages run on with hints and context."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class NoAnswer(psycopg.OperationalError):
    """The database left a round trip unanswered past its bound; the connection was closed."""


class Waits:
    """The connections of one store waiting for the database's answer now, and since when.

    ``give_up_older`` ends the waits begun at least so many seconds ago by shutting
    their sockets down: the waiting thread wakes at once to an ended connection,
    which ``AnsweringConnection.wait`` reports as ``NoAnswer`` (and closes), as if
    its own bound had passed. Shutting down, not closing: the descriptor stays the
    waiting thread's, which closes it, so no other connection can be handed the
    same number while it still waits on it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[psycopg.Connection[Any], float] = {}
        self._given_up: dict[psycopg.Connection[Any], float] = {}

    @contextlib.contextmanager
    def waiting(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        with self._lock:
            self._since[conn] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._since.pop(conn, None)
                self._given_up.pop(conn, None)

    def given_up(self, conn: psycopg.Connection[Any]) -> float | None:
        """How long ``conn`` had waited when it was given up; None if it was not."""
        with self._lock:
            return self._given_up.get(conn)

    def give_up_older(self, seconds: float) -> int:
        """End every wait begun ``seconds`` ago or earlier; how many there were."""
        now = time.monotonic()
        ended = 0
        with self._lock:  # a wait that ends meanwhile leaves first: its connection is never cut after
            for conn, since in list(self._since.items()):
                if now - since < seconds or conn in self._given_up:
                    continue
                self._given_up[conn] = now - since
                if _shut_down(conn):
                    ended += 1
        return ended

    def __len__(self) -> int:
        with self._lock:
            return len(self._since)


def _shut_down(conn: psycopg.Connection[Any]) -> bool:
    """Shut ``conn``'s socket down for both directions, through a duplicate of its descriptor."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:  # closed meanwhile
        return False
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


class AnsweringConnection(psycopg.Connection[Any]):
    """A connection that waits at most ``answer_seconds`` for any one round trip.

    Every blocking step of a sync psycopg connection (a statement, a pipeline's
    sync, COMMIT, the pool's checks) goes through ``wait``. Past the bound the
    connection's state is unknown (a statement may still be running, or be
    committed, on the server), so it is closed: nothing more is sent on it and
    the pool drops it when it comes back. ``waits`` holds the waits under way, for
    the store to give up early (``Waits``).
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
        bound = self.answer_seconds
        if timeout is not None:
            return super().wait(gen, interval, timeout)  # the caller's own wait (LISTEN): not an answer awaited
        waits = self.waits
        if waits is None:
            return self._answered(gen, interval, bound)
        with waits.waiting(self):
            try:
                return self._answered(gen, interval, bound)
            except psycopg.OperationalError:
                waited = waits.given_up(self)
                if waited is None:
                    raise
                self._stigmer_closed_on_purpose = True  # the store logged it: the pool need not warn again
                self.close()
                raise NoAnswer(
                    f"the database did not answer for {waited:.1f} s, and the daemon finds it not answering "
                    "(its health is NOT_SERVING); the call's connection was closed"
                ) from None

    def _answered(self, gen: PQGen[RV], interval: float, bound: float) -> RV:
        try:
            return super().wait(gen, interval, bound)
        except pg_errors._WaitTimeout:  # psycopg's own (3.3.6+), raised by nothing else
            self.close()
            raise NoAnswer(f"the database did not answer within {bound:g} s; its connection was closed") from None


def answered_within(conn: psycopg.Connection[Any], seconds: float, query: bytes) -> Any:
    """One row of ``query``, waiting at most ``seconds`` for it (``NoAnswer`` past that, the
    connection closed) rather than the connection's own ``answer_seconds``."""
    kept = vars(conn).get("answer_seconds")  # the listener's connection has its own
    conn.answer_seconds = seconds  # type: ignore[attr-defined]
    try:
        return conn.execute(query).fetchone()
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
        finally:
            with self._lock:
                self.opening -= 1

    def failing_since(self, started: float) -> bool:
        """Whether opening a connection failed after ``started``, or an attempt is still under way."""
        with self._lock:
            return self.opening > 0 or self.failed_at >= started


def bounded_class(
    answer_seconds: float, openings: Openings | None = None, waits: Waits | None = None
) -> type[AnsweringConnection]:
    """A connection class of one store's: its bound, its openings and its waits."""
    attributes = {"answer_seconds": answer_seconds, "openings": openings, "waits": waits}
    return type("StigmerConnection", (AnsweringConnection,), attributes)
