"""On grpc's sync server, one caller's unary calls hold at most a share of each thread pool.

The sync server (every daemon on PostgreSQL) gives each unary call a pool
thread when its headers arrive, and the call keeps it until it ends. A member
with a valid token (a viewer's, or a leaked one) could open calls whose
message never comes, or many slow ones, and hold every read or rpc thread for
``STIGMER_REQUEST_READ_TIMEOUT`` seconds at a time, again and again, while
every other member's calls queued. So each token's principal holds at most
``STIGMER_MAX_CALLS_PER_CALLER`` threads of each pool at once (by default
half of the pool, at least one): counted from the call's admission (its token
known, its message not yet read) to its end, and past it the call is refused
RESOURCE_EXHAUSTED at once, before anything waits for its message, so a
refusal holds its thread for microseconds and the other half of the pool
keeps serving everyone else. Calls grpc holds in its queue have no thread and
are not counted. The local administrator owns the machine and is not bound,
as for streams. grpc's own bound on a connection's streams
(``grpc.max_concurrent_streams``, unlimited in grpc's core by default) would
not do this: it counts per connection, and a caller opens more connections.
"""

from __future__ import annotations

import logging
import threading

from stigmer_core import errors

log = logging.getLogger(__name__)

ENV = "STIGMER_MAX_CALLS_PER_CALLER"
REASON = "CALL_LIMIT"


def share(threads: int, setting: int | None) -> int:
    """Threads of a pool of ``threads`` one caller may hold: ``setting``, or half of them (at least
    one), so that a single token never holds a whole pool however it calls."""
    return setting if setting is not None else max(1, threads // 2)


class CallLimit:
    """At most ``limit`` calls of one principal running on one pool at once.

    A call costs a lock and a dict update when it starts and when it ends; ``take`` and
    ``give`` pair up in a ``finally``, so a call that raises, is cancelled or runs out of time
    gives its slot back."""

    __slots__ = ("_held", "_lock", "_refusing", "limit", "pool")

    def __init__(self, limit: int, pool: str) -> None:
        self.limit = limit
        self.pool = pool
        self._held: dict[str, int] = {}
        self._refusing: set[str] = set()
        """Principals refused since they last fell below the limit: one log line per episode."""
        self._lock = threading.Lock()

    def take(self, principal: str) -> None:
        """A slot for ``principal``, or RESOURCE_EXHAUSTED (``CALL_LIMIT``) when it holds ``limit``."""
        with self._lock:
            held = self._held.get(principal, 0)
            if held < self.limit:
                self._held[principal] = held + 1
                return
            first = principal not in self._refusing
            if first:
                self._refusing.add(principal)
        if first:
            log.warning(
                "refused: principal=%s holds %d calls on the %s threads, as many as one caller may (%s)",
                principal,
                held,
                self.pool,
                ENV,
            )
        raise errors.ResourceExhausted(
            f"{principal} has {held} calls running on the daemon's {self.pool} threads, as many as one "
            f"caller may at once (setting {ENV}); retry once one of them has ended",
            reason=REASON,
            metadata={"limit": self.limit, "setting": ENV, "principal": principal},
        )

    def give(self, principal: str) -> None:
        with self._lock:
            left = self._held[principal] - 1
            if left:
                self._held[principal] = left
            else:
                del self._held[principal]
            if self._refusing:
                self._refusing.discard(principal)

    def held(self, principal: str) -> int:
        with self._lock:
            return self._held.get(principal, 0)
