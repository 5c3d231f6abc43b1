"""Turns at something scarce, handed out in the order they were asked for.

Streams catching up on the event log of a database take turns at a few of its
connections (``store.protocol.BoundsStreamReads``). A plain semaphore would do
the bounding, but a waiter that stops waiting to check on its caller would go
to the back of the line each time, and under a long line some would wait far
longer than others; here a waiter keeps its place until it gives up.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Turns:
    """At most ``slots`` holders at once; the rest wait in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._line: deque[threading.Event] = deque()

    def take(self, wanted: Callable[[], bool], until: float | None = None, check_every: float = 1.0) -> bool:
        """Wait for a turn; False once ``wanted()`` turns false (checked every ``check_every``
        seconds) or ``until`` (``time.monotonic()``) passes first. True: call ``give`` after."""
        with self._lock:
            if self._free and not self._line:
                self._free -= 1
                return True
            turn = threading.Event()
            self._line.append(turn)
        while True:
            wait = check_every if until is None else min(check_every, until - time.monotonic())
            if wait > 0 and turn.wait(wait):
                return True
            if wanted() and (until is None or time.monotonic() < until):
                continue
            with self._lock:
                handed = turn.is_set()
                if not handed:
                    self._line.remove(turn)
            if handed:  # handed over just as this waiter gave up: pass it on
                self.give()
            return False

    def give(self) -> None:
        """End a turn: the first waiter in line gets it."""
        with self._lock:
            if self._line:
                self._line.popleft().set()
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._line)
