"""On grpc's sync server, one caller's calls wait for their request message on at most a share of each thread pool.

The sync server (every daemon on PostgreSQL) gives each unary call a pool
thread when its headers arrive, and the thread then waits for the call's
message. A member with a valid token (a viewer's, or a leaked one) could open
calls whose message never comes and hold every read or rpc thread for
``STIGMER_REQUEST_READ_TIMEOUT`` seconds at a time, again and again, while
every other member's calls queued. So each token's principal has at most
``STIGMER_MAX_UNREAD_CALLS_PER_CALLER`` unread calls on each pool at once (by
default half of the pool, at least one): calls that have waited a second for
their message (``request_read.GRACE``). Past it the next call is refused
RESOURCE_EXHAUSTED at once, before anything waits for its message, so a
refusal holds its thread for microseconds, and a call that turns unread past
it is ended; the other half of the pool keeps serving everyone else.

Only the wait for the message is counted, not the call's work, and only past
the grace: a grpc client sends a call's message with its headers, but the
server takes it in after it has handed the call a thread, milliseconds later
on a busy server (a client with 64 calls in flight on 8 threads had several
waiting at once). A client with many calls in flight is never refused for
them; one whose messages do not come is, past its share. A caller that
reopens its calls as they end still holds every thread for one grace at a
time, and its share of them for the whole read timeout. Calls grpc holds in its queue
have no thread and are not counted. The local administrator owns the machine
and is not bound, as for streams. grpc's own bound on a connection's streams
(``grpc.max_concurrent_streams``, unlimited in grpc's core by default) would
not do this: it counts per connection, and a caller opens more connections.
"""

from __future__ import annotations

import logging
import threading

from stigmer_core import errors

log = logging.getLogger(__name__)

ENV = "STIGMER_MAX_UNREAD_CALLS_PER_CALLER"
REASON = "UNREAD_CALL_LIMIT"


def share(threads: int, setting: int | None) -> int:
    """Threads of a pool of ``threads`` one caller's unread calls may hold: ``setting``, or half of
    them (at least one), so that a single token never holds a whole pool however it calls."""
    return setting if setting is not None else max(1, threads // 2)


class CallLimit:
    """At most ``limit`` unread calls of one principal on one pool at once.

    A call is unread once it has waited ``request_read.GRACE`` for its message: a grpc client
    sends its message with its headers, so its calls are read within milliseconds even with
    hundreds in flight and a busy server, and only a caller sending nothing has unread calls.
    A principal at its share has its next call refused before anything waits for its message,
    and a call that turns unread past the share is ended. Admitting a call reads one dict
    entry; only an unread call takes the lock."""

    __slots__ = ("_lock", "_refusing", "_unread", "limit", "pool")

    def __init__(self, limit: int, pool: str) -> None:
        self.limit = limit
        self.pool = pool
        self._unread: dict[str, int] = {}
        self._refusing: set[str] = set()
        """Principals refused since they last fell below the limit: one log line per episode."""
        self._lock = threading.Lock()

    def take(self, principal: str) -> None:
        """Nothing, or RESOURCE_EXHAUSTED (``UNREAD_CALL_LIMIT``) when ``principal`` has ``limit``
        unread calls."""
        held = self._unread.get(principal, 0)
        if held < self.limit:
            return
        self._log_refusal(principal, held)
        raise errors.ResourceExhausted(
            f"{principal} has {held} calls on the daemon's {self.pool} threads still waiting for their request "
            f"message, as many as one caller may at once (setting {ENV}); retry once their messages are sent "
            "or their calls have ended",
            reason=REASON,
            metadata={"limit": self.limit, "setting": ENV, "principal": principal},
        )

    def late(self, principal: str) -> bool:
        """Counts one more unread call of ``principal``: False, counting nothing, when it already
        has its share (the call is then ended)."""
        with self._lock:
            held = self._unread.get(principal, 0)
            if held < self.limit:
                self._unread[principal] = held + 1
                return True
        return False

    def ended(self, principal: str, grace: float) -> str:
        """Why a call that turned unread past ``principal``'s share was ended."""
        self._log_refusal(principal, self.limit)
        return (
            f"{principal} already has {self.limit} calls on the daemon's {self.pool} threads waiting more than "
            f"{grace:g}s for their request message, as many as one caller may at once (setting {ENV}); "
            "the call was ended"
        )

    def give(self, principal: str) -> None:
        """An unread call's message came, or its call ended."""
        with self._lock:
            left = self._unread[principal] - 1
            if left:
                self._unread[principal] = left
            else:
                del self._unread[principal]
            if self._refusing:
                self._refusing.discard(principal)

    def held(self, principal: str) -> int:
        """Unread calls of ``principal`` now."""
        with self._lock:
            return self._unread.get(principal, 0)

    def _log_refusal(self, principal: str, held: int) -> None:
        with self._lock:
            first = principal not in self._refusing
            self._refusing.add(principal)
        if first:
            log.warning(
                "refused: principal=%s has %d calls on the %s threads waiting for their request message, "
                "as many as one caller may (%s)",
                principal,
                held,
                self.pool,
                ENV,
            )
