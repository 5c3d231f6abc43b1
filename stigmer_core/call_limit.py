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
The callers of one org together (an org's admin can make more tokens) have a
share of each pool too, ``STIGMER_MAX_UNREAD_CALLS_PER_ORG`` (three quarters of
it by default), so one org's members cannot hold what every other org's calls need.
Past a share the next call is refused RESOURCE_EXHAUSTED at once, before
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
from stigmer_core.accounts import Account

log = logging.getLogger(__name__)

ENV = "STIGMER_MAX_UNREAD_CALLS_PER_CALLER"
ORG_ENV = "STIGMER_MAX_UNREAD_CALLS_PER_ORG"
REASON = "UNREAD_CALL_LIMIT"
GRACE_ENV = "STIGMER_UNREAD_CALL_GRACE"

Key = str | tuple[str, str]
"""What is counted: a principal, or ``("org", name)`` for the callers of an org together."""


def share(threads: int, setting: int | None) -> int:
    """Threads of a pool of ``threads`` one caller's unread calls may hold: ``setting``, or half
    of them (at least one), so that a single token never holds a whole pool however it calls."""
    return setting if setting is not None else max(1, threads // 2)


def org_share(threads: int, setting: int | None) -> int:
    """Threads of a pool of ``threads`` the unread calls of one org's callers together may hold:
    ``setting``, or three quarters of them (at least one). More than one caller's half, so one
    member's stuck client leaves the org's other members threads; less than the whole, so
    every other org keeps a quarter."""
    return setting if setting is not None else max(1, 3 * threads // 4)


class CallLimit:
    """At most ``limit`` unread calls of one principal, and ``org_limit`` of one org's principals
    together, on one pool at once.

    A call is unread once it has waited ``ReadDeadlines.grace`` for its message: a grpc client
    sends its message with its headers, so its calls are read within milliseconds even with
    hundreds in flight and a busy server, and only a caller sending nothing has unread calls.
    A call that ended without its message, after waiting for it (``strike``), stays counted
    until its ``until``: so a caller cannot hold threads by resetting each call before its grace.
    An account at a share has its next call refused before anything waits for its message,
    and a call that turns unread past a share is ended. Admitting a call of an account with
    nothing counted reads a few dicts; only an unread or ended-unread call takes the lock."""

    __slots__ = ("_lock", "_refusing", "_strikes", "_unread", "limit", "org_limit", "where")

    def __init__(self, limit: int, where: str, org_limit: int | None = None) -> None:
        self.limit = limit
        self.org_limit = org_limit
        """None: the callers of an org have no share together, only each its own."""
        self.where = where
        """What the calls hold, for messages: "the daemon's rpc threads", say."""
        self._unread: dict[Key, int] = {}
        self._strikes: dict[Key, collections.deque[float]] = {}
        """When each of a key's calls that ended unread stops counting, oldest first."""
        self._refusing: set[Key] = set()
        """Keys refused since they last fell below their share: one log line per episode."""
        self._lock = threading.Lock()

    def _keys(self, account: Account) -> list[tuple[Key, int]]:
        keys: list[tuple[Key, int]] = [(account.principal, self.limit)]
        if self.org_limit is not None:
            keys.extend((("org", org), self.org_limit) for org in account.orgs)
        return keys

    def _clear(self, account: Account) -> bool:
        """Without the lock: nothing of ``account``'s is unread near a share, nor struck."""
        strikes, unread = self._strikes, self._unread
        principal = account.principal
        if principal in strikes or unread.get(principal, 0) >= self.limit:
            return False
        if self.org_limit is not None:
            for org in account.orgs:
                key = ("org", org)
                if key in strikes or unread.get(key, 0) >= self.org_limit:
                    return False
        return True

    def _full(self, account: Account) -> tuple[Key, int, int] | None:
        """Under the lock: the first of ``account``'s keys at its share, with what it holds and may."""
        for key, limit in self._keys(account):
            held = self._counted(key)
            if held >= limit:
                return key, held, limit
        return None

    def take(self, account: Account) -> None:
        """Nothing, or RESOURCE_EXHAUSTED (``UNREAD_CALL_LIMIT``) when ``account``'s principal, or
        one of its orgs, has its share of calls counted."""
        if self._clear(account):
            return
        with self._lock:
            full = self._full(account)
        if full is None:
            return
        key, held, limit = full
        self._log_refusal(key, held, limit)
        counted = "(calls waiting for their request message, or that ended without it in the last few seconds)"
        if isinstance(key, tuple):
            said = (
                f"the callers of org {key[1]} have {held} calls counted on {self.where} {counted}, and one "
                f"org's callers together may have {limit} (setting {ORG_ENV}); retry in a few seconds"
            )
            metadata = {"limit": limit, "setting": ORG_ENV, "principal": account.principal, "org": key[1]}
        else:
            said = (
                f"{key} has {held} calls counted on {self.where} {counted}, and one caller may have "
                f"{limit} (setting {ENV}); retry in a few seconds"
            )
            metadata = {"limit": limit, "setting": ENV, "principal": key}
        raise errors.ResourceExhausted(said, reason=REASON, metadata=metadata)

    def late(self, account: Account) -> bool:
        """Counts one more unread call of ``account``: False, counting nothing, when it (or one of
        its orgs) already has its share (the call is then ended)."""
        with self._lock:
            if self._full(account) is not None:
                return False
            unread = self._unread
            for key, _ in self._keys(account):
                unread[key] = unread.get(key, 0) + 1
            return True

    def ended(self, account: Account, grace: float) -> str:
        """Why a call that turned unread past a share of ``account``'s was ended."""
        with self._lock:
            full = self._full(account)
        key, _, limit = full if full is not None else (account.principal, self.limit, self.limit)
        self._log_refusal(key, limit, limit)
        if isinstance(key, tuple):
            whose, setting = f"the callers of org {key[1]} already have", ORG_ENV
            many = "as many as one org's callers may at once"
        else:
            whose, setting, many = f"{key} already has", ENV, "as many as one caller may at once"
        return (
            f"{whose} {limit} calls on {self.where} that waited more than {grace:g}s for their request "
            f"message, {many} (setting {setting}); the call was ended"
        )

    def give(self, account: Account, until: float | None = None) -> None:
        """An unread call's message came, or its call ended (without it: counted until ``until``)."""
        with self._lock:
            for key, _ in self._keys(account):
                left = self._unread[key] - 1
                if left:
                    self._unread[key] = left
                else:
                    del self._unread[key]
                if until is not None:
                    self._strikes.setdefault(key, collections.deque()).append(until)
                if self._refusing:
                    self._refusing.discard(key)

    def strike(self, account: Account, until: float) -> None:
        """A call of ``account`` not yet unread ended without its message: counted until ``until``.
        Against its orgs only while its principal was within its own share: a call ended because
        one member's share was full counts against that member alone, so one stuck client cannot
        fill its org's share with the calls its own share refused."""
        with self._lock:
            within = self._counted(account.principal) < self.limit
            for key, _ in self._keys(account) if within else [(account.principal, self.limit)]:
                self._strikes.setdefault(key, collections.deque()).append(until)

    def held(self, key: Key) -> int:
        """Calls of ``key`` (a principal, or ``("org", name)``) counted now: unread, or ended
        unread a short while ago."""
        with self._lock:
            return self._counted(key)

    def _counted(self, key: Key) -> int:
        """Under the lock: unread calls and unexpired strikes (expired ones are dropped)."""
        held = self._unread.get(key, 0)
        strikes = self._strikes.get(key)
        if strikes is None:
            return held
        now = time.monotonic()
        while strikes and strikes[0] <= now:
            strikes.popleft()
        if not strikes:
            del self._strikes[key]
            self._refusing.discard(key)
            return held
        return held + len(strikes)

    def _log_refusal(self, key: Key, held: int, limit: int) -> None:
        with self._lock:
            first = key not in self._refusing
            self._refusing.add(key)
        if not first:
            return
        if isinstance(key, tuple):
            whose, one, setting = f"the callers of org {key[1]} have", "one org's callers", ORG_ENV
        else:
            whose, one, setting = f"principal={key} has", "one caller", ENV
        log.warning(
            "refused: %s %d calls counted on %s (waiting for their request message, or ended without it a "
            "short while ago); %s may have %d (%s)",
            whose,
            held,
            self.where,
            one,
            limit,
            setting,
        )
