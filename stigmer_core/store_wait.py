"""How a daemon's start waits for a database that does not answer yet (``stigmer serve --store-wait``).

Kept apart from ``server`` so the command line reads its defaults without importing grpc.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from stigmer_core.errors import DatabaseUnreachable
from stigmer_core.said import say

if TYPE_CHECKING:
    from stigmer_core.application import Application

STORE_WAIT_SECONDS = 30.0
"""How long a daemon's start waits for its database by default (``--store-wait``)."""
MAX_STORE_WAIT_SECONDS = 3600.0
_RETRY_SECONDS = (0.25, 5.0)
"""The first pause between two tries to reach the database, and the longest (each doubles)."""


def opened_once_reachable(
    open_app: Callable[[], Application], wait: float, stop: threading.Event
) -> Application | None:
    """The application, once its database answers; None if a signal came first.

    A database and its daemons are often started together (a compose file, a host's boot, a
    cluster coming back), and a daemon that exited at once, the database still starting, stayed
    down until something restarted it. The reason is told at the first failure, so a wrong host
    or password is seen at once, not after the wait.
    """
    deadline = time.monotonic() + wait
    pause, longest = _RETRY_SECONDS
    told = False
    while True:
        try:
            return open_app()
        except DatabaseUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if told:
                    raise DatabaseUnreachable(f"waited {wait:g} s for the database (--store-wait): {exc}") from exc
                raise
            if not told:
                say(f"waiting up to {wait:g} s for the database (--store-wait): {exc}")
                told = True
            if stop.wait(min(pause, left)):
                return None
            pause = min(pause * 2, longest)
