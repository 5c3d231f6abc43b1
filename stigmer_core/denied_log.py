"""How often a refused call of one kind is logged.

Every refused call logs one ``denied:`` line (``controller.log_refusal``). A caller
without a token can send thousands of calls a second, each refused, and each line
written: 40 MB of log in minutes, a full disk in a day, and the lines an operator
looks for (a leaked token tried from elsewhere) lost among them. So the refusals of
one principal, method and status are logged once per interval: the first as it
comes, the rest counted, and the count told on the next line of the same kind
after the interval (``… (and 7,980 more like it in the last 60 s)``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from stigmer_core import env_numbers
from stigmer_core.errors import StartupError

ENV = "STIGMER_DENIED_LOG_SECONDS"
DEFAULT_SECONDS = 60.0
LONGEST = 3600.0
MAX_KINDS = 10_000
"""Kinds of refusal remembered at once (a caller's address is part of an anonymous one's): past
it, those whose interval ended are forgotten, or all of them."""

Key = tuple[str, str, str]


def seconds_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``STIGMER_DENIED_LOG_SECONDS``: 0 logs every refusal; checked when the daemon starts."""
    seconds = env_numbers.seconds(os.environ if environ is None else environ, ENV)
    if seconds is None:
        return DEFAULT_SECONDS
    if not 0 <= seconds <= LONGEST:  # NaN and infinity too
        raise StartupError(f"{ENV} must be from 0 to {LONGEST:g} seconds, not {seconds:g}")
    return seconds


class DeniedLog:
    """Decides which refusals are written: ``admit(key)`` is None for one left out, else how many
    like it were left out since the last one written."""

    def __init__(self, seconds: float = DEFAULT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Key, tuple[float, int]] = {}
        """Per kind of refusal: when its last line was written, and how many were left out since."""

    def admit(self, key: Key) -> int | None:
        if self.seconds <= 0:
            return 0
        now = self._clock()
        with self._lock:
            found = self._seen.get(key)
            if found is not None and now - found[0] < self.seconds:
                self._seen[key] = (found[0], found[1] + 1)
                return None
            if found is None and len(self._seen) >= MAX_KINDS:
                self._forget(now)
            self._seen[key] = (now, 0)
            return found[1] if found is not None else 0

    def _forget(self, now: float) -> None:
        """Past ``MAX_KINDS``: drop those whose interval ended (their left-out counts are lost),
        or every one when none has ended."""
        ended = [key for key, (when, _) in self._seen.items() if now - when >= self.seconds]
        for key in ended:
            del self._seen[key]
        if len(self._seen) >= MAX_KINDS:
            self._seen.clear()

