"""Answers a caller has not read yet, held to a bound per caller and per daemon.

grpc keeps a unary call's serialized answer until the client's HTTP/2 flow
control lets it out, and the call ends only then. A client that stops reading
(it sends no WINDOW_UPDATE, one raw socket is enough, with a viewer's token)
kept every answer it asked for: 150 list pages of 2.5 MB held 670 MB of a
daemon for as long as the socket stayed open. So the bytes of answers made
and not yet sent are counted per principal and for the whole daemon, from
when the answer is serialized to when its call ends; a call of a principal
at its share, or while the daemon is at its total, is refused
RESOURCE_EXHAUSTED (reason ``UNSENT_ANSWER_LIMIT``) before it does any work.
Counted only where tokens are required (a team server): a loopback daemon
without tokens has one user, whose client reads what it asks for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stigmer_core.errors import ResourceExhausted

PER_CALLER_ENV = "STIGMER_MAX_UNSENT_BYTES_PER_CALLER"
TOTAL_ENV = "STIGMER_MAX_UNSENT_BYTES"
REASON = "UNSENT_ANSWER_LIMIT"


class UnsentAnswers:
    """The bytes of answers made and not yet sent, by principal and in all."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._all = 0

    def check(self, principal: str) -> None:
        """Refuse a call of ``principal`` while it, or the daemon, holds its bound of unsent answers."""
        held, total = self._held.get(principal, 0), self._all  # read without the lock: a bound, not a count
        if held < self.per_caller and total < self.total:
            return
        if held >= self.per_caller:
            said = (
                f"{principal} has {held:,} bytes of answers its client has not read yet, the most one caller may "
                f"have ({PER_CALLER_ENV}, {self.per_caller:,}): read the answers already asked for, then retry"
            )
            setting, limit = PER_CALLER_ENV, self.per_caller
        else:  # another caller's doing, most likely: this one can only wait
            said = (
                f"the daemon holds {total:,} bytes of answers its callers' clients have not read yet, the most it "
                f"holds ({TOTAL_ENV}, {self.total:,}): retry in a moment"
            )
            setting, limit = TOTAL_ENV, self.total
        raise ResourceExhausted(
            said, reason=REASON, metadata={"limit": limit, "setting": setting, "principal": principal}
        )

    def hold(self, principal: str, size: int) -> Callable[[], None]:
        """Count ``size`` bytes of ``principal``'s until what is returned is called (once counts)."""
        with self._lock:
            self._held[principal] = self._held.get(principal, 0) + size
            self._all += size
        done = [False]

        def release() -> None:
            with self._lock:
                if done[0]:
                    return
                done[0] = True
                left = self._held[principal] - size
                if left:
                    self._held[principal] = left
                else:
                    del self._held[principal]
                self._all -= size

        return release

    def held(self, principal: str) -> int:
        return self._held.get(principal, 0)


def passthrough(data: bytes) -> bytes:
    """The response serializer of a call whose behavior serialized its answer itself (to count it)."""
    return data
