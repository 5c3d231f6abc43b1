"""A bound on streams of a service that answers without a token (reflection, health's Watch).

Past it a stream is refused RESOURCE_EXHAUSTED with reason ``STREAM_LIMIT``, never made to wait:
such a service is open to anyone who can connect, so what its idle streams hold is bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stigmer_core.errors import ResourceExhausted


class OpenStreams:
    """At most ``limit`` streams open at once; past it, RESOURCE_EXHAUSTED (never a wait).
    ``what``: the stream, as a refusal names it; ``setting``: the variable that sets ``limit``."""

    def __init__(self, limit: int, what: str, setting: str) -> None:
        self.limit = limit
        self._what = what
        self._setting = setting
        self._slots = threading.BoundedSemaphore(limit)

    def take(self) -> Callable[[], None]:
        """A slot, and what gives it back (once, however often it is called)."""
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"too many open {self._what}s (limit {self.limit}, setting {self._setting}); "
                f"close a {self._what} or retry later",
                reason="STREAM_LIMIT",
                metadata={"limit": self.limit, "setting": self._setting},
            )
        held = [self._slots]
        lock = threading.Lock()

        def give_back() -> None:
            with lock:
                slots = held.pop() if held else None
            if slots is not None:
                slots.release()

        return give_back
