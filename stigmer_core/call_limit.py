"""On grpc's sync server, one caller's calls that send nothing hold at most a share of each thread pool.

The sync server (every daemon on PostgreSQL) gives each call a pool thread
when its headers arrive, and the thread then waits for the call's message. A
member with a valid token (a viewer's, or a leaked one) could open calls whose
message never comes and hold every read, rpc or stream thread for
``STIGMER_REQUEST_READ_TIMEOUT`` seconds at a time, again and again, while
every other member's calls queued. So each token's principal has a share of
each pool, ``STIGMER_MAX_UNREAD_CALLS_PER_CALLER`` (by default half of the
pool, at least one), that counts its unread calls: those that have waited the
grace for their message (``STIGMER_UNREAD_CALL_GRACE``, 1 s), and for 5 s more
those that ended without it after waiting for it, so that resetting each call
just before its grace counts as well. Health checks need no token and have no
share: a probe refused because another client shares its host would report a
healthy server down.
Past the share the next call is refused RESOURCE_EXHAUSTED at once, before
anything waits for its message, so a refusal holds its thread for
microseconds, and a call that turns unread past it is ended; the other half
of the pool keeps serving everyone else.

Only the wait for the message is counted, not the call's work, and only past
the grace: a grpc client sends a call's message with its headers, but the
server takes it in after it has handed the call a thread, milliseconds later
on a busy server (a client with 64 calls in flight on 8 threads had several
waiting at once). A client with many calls in flight is never refused for
them; one whose messages do not come is, past its share. Calls grpc holds in
its queue have no thread and are not counted. The local administrator owns
the machine and is not bound, as for streams. grpc's own bound on a
connection's streams (``grpc.max_concurrent_streams``, unlimited in grpc's
core by default) would not do this: it counts per connection, and a caller
opens more connections.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from stigmer_core import errors

log = logging.getLogger(__name__)

ENV = "STIGMER_MAX_UNREAD_CALLS_PER_CALLER"
REASON = "UNREAD_CALL_LIMIT"
GRACE_ENV = "STIGMER_UNREAD_CALL_GRACE"


def share(threads: int, setting: int | None) -> int:
    """Threads of a pool of ``threads`` one caller's unread calls may hold: ``setting``, or half of
    them (at least one), so that a single token never holds a whole pool however it calls."""
    return setting if setting is not None else max(1, threads // 2)


class CallLimit:
    """At most ``limit`` unread calls of one principal on one pool at once.

    A call is unread once it has waited ``ReadDeadlines.grace`` for its message: a grpc client
    sends its message with its headers, so its calls are read within milliseconds even with
    hundreds in flight and a busy server, and only a caller sending nothing has unread calls.
    A call that ended without its message, after waiting for it (``strike``), stays counted
    until its ``until``: so a caller cannot hold threads by resetting each call before its grace.
    A principal at its share has its next call refused before anything waits for its message,
    and a call that turns unread past the share is ended. Admitting a call of a principal with
    nothing counted reads two dicts; only an unread or ended-unread call takes the lock."""

    __slots__ = ("_lock", "_refusing", "_strikes", "_unread", "limit", "where")

    def __init__(self, limit: int, where: str) -> None:
        self.limit = limit
        self.where = where
        """What the calls hold, for messages: "the daemon's rpc threads", say."""
        self._unread: dict[str, int] = {}
        self._strikes: dict[str, collections.deque[float]] = {}
        """When each of a principal's calls that ended unread stops counting, oldest first."""
        self._refusing: set[str] = set()
        """Principals refused since they last fell below the limit: one log line per episode."""
        self._lock = threading.Lock()

    def take(self, principal: str) -> None:
        """Nothing, or RESOURCE_EXHAUSTED (``UNREAD_CALL_LIMIT``) when ``principal`` has ``limit``
        calls counted."""
        if principal not in self._strikes and self._unread.get(principal, 0) < self.limit:
            return
        with self._lock:
            held = self._counted(principal)
        if held < self.limit:
            return
        self._log_refusal(principal, held)
        raise errors.ResourceExhausted(
            f"{principal} has {held} calls counted on {self.where} (calls waiting for their "
            f"request message, or that ended without it in the last few seconds), and one caller may have "
            f"{self.limit} (setting {ENV}); retry in a few seconds",
            reason=REASON,
            metadata={"limit": self.limit, "setting": ENV, "principal": principal},
        )

    def late(self, principal: str) -> bool:
        """Counts one more unread call of ``principal``: False, counting nothing, when it already
        has its share (the call is then ended)."""
        with self._lock:
            if self._counted(principal) < self.limit:
                self._unread[principal] = self._unread.get(principal, 0) + 1
                return True
        return False

    def ended(self, principal: str, grace: float) -> str:
        """Why a call that turned unread past ``principal``'s share was ended."""
        self._log_refusal(principal, self.limit)
        return (
            f"{principal} already has {self.limit} calls on {self.where} that waited more than "
            f"{grace:g}s for their request message, as many as one caller may at once (setting {ENV}); "
            "the call was ended"
        )

    def give(self, principal: str, until: float | None = None) -> None:
        """An unread call's message came, or its call ended (without it: counted until ``until``)."""
        with self._lock:
            left = self._unread[principal] - 1
            if left:
                self._unread[principal] = left
            else:
                del self._unread[principal]
            if until is not None:
                self._strikes.setdefault(principal, collections.deque()).append(until)
            if self._refusing:
                self._refusing.discard(principal)

    def strike(self, principal: str, until: float) -> None:
        """A call of ``principal`` not yet unread ended without its message: counted until ``until``."""
        with self._lock:
            self._strikes.setdefault(principal, collections.deque()).append(until)

    def held(self, principal: str) -> int:
        """Calls of ``principal`` counted now: unread, or ended unread a short while ago."""
        with self._lock:
            return self._counted(principal)

    def _counted(self, principal: str) -> int:
        """Under the lock: unread calls and unexpired strikes (expired ones are dropped)."""
        held = self._unread.get(principal, 0)
        strikes = self._strikes.get(principal)
        if strikes is None:
            return held
        now = time.monotonic()
        while strikes and strikes[0] <= now:
            strikes.popleft()
        if not strikes:
            del self._strikes[principal]
            self._refusing.discard(principal)
            return held
        return held + len(strikes)

    def _log_refusal(self, principal: str, held: int) -> None:
        with self._lock:
            first = principal not in self._refusing
            self._refusing.add(principal)
        if first:
            log.warning(
                "refused: principal=%s has %d calls counted on %s (waiting for their request "
                "message, or ended without it a short while ago); one caller may have %d (%s)",
                principal,
                held,
                self.where,
                self.limit,
                ENV,
            )
