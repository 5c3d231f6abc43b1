"""Turns at something scarce, handed out in the order they were asked for.

Streams catching up on the event log of a database take turns at a few of its
connections (``store.protocol.BoundsStreamReads``). A plain semaphore would do
the bounding, but a waiter that stops waiting for a while (to send a bookmark
that fell due) would go to the back of the line each time: under a line longer
than the bookmark interval the same streams would go back again and again and
never read. Here a waiter holds a ``Place`` and keeps it until it leaves.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Place:
    """One waiter's place in line; reused for each of its turns."""

    __slots__ = ("_called", "held", "waiting")

    def __init__(self) -> None:
        self._called = threading.Event()
        self.waiting = False
        self.held = False


class Turns:
    """At most ``slots`` holders at once; the rest wait in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._line: deque[Place] = deque()

    def take(
        self, place: Place, wanted: Callable[[], bool], until: float | None = None, check_every: float = 1.0
    ) -> bool:
        """Wait for a turn; True: ``place`` holds it until ``give``. False once ``until``
        (``time.monotonic()``) passes, keeping the place in line for the next ``take``, or once
        ``wanted()`` (checked every ``check_every`` seconds) turns false, leaving the line."""
        with self._lock:
            if place.held:  # called while away
                return True
            if not place.waiting:
                if self._free and not self._line:
                    self._free -= 1
                    place.held = True
                    return True
                place._called.clear()
                place.waiting = True
                self._line.append(place)
        while True:
            wait = check_every if until is None else min(check_every, until - time.monotonic())
            if place._called.wait(max(wait, 0)):
                return True
            if not wanted():
                self.leave(place)
                return False
            if until is not None and time.monotonic() >= until:
                return False

    def give(self, place: Place) -> None:
        """End ``place``'s turn: the first in line gets it."""
        with self._lock:
            place.held = False
            self._hand_on()

    def leave(self, place: Place) -> None:
        """Leave the line, or give up a turn called while away; nothing if neither."""
        with self._lock:
            if place.waiting:
                self._line.remove(place)
                place.waiting = False
            elif place.held:
                place.held = False
                self._hand_on()

    def _hand_on(self) -> None:
        if self._line:
            found = self._line.popleft()
            found.waiting = False
            found.held = True
            found._called.set()
        else:
            self._free += 1

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._line)
