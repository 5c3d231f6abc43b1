"""A daemon's stop, bounded in time.

A daemon that does not end on SIGTERM keeps its data directory locked and its port bound until
something kills it: `stigmer local stop` gives up, the next `local start` finds it still there,
and a platform's kill timeout ends it with no word of why. So once a stop begins, a second
SIGTERM or Ctrl-C ends the process at once (the kernel's own action: it works whatever the
interpreter's threads are doing), and a stop still running ``limit`` seconds later prints every
thread's stack to stderr (the daemon's log) and ends the process with exit code 1. That limit is
faulthandler's watchdog, a C thread of its own, so it fires even when Python code cannot run (a
thread holding the GIL in an extension). Every write the daemon answered is durable by then: a
stop cut short loses nothing stored, and the next start opens the store as after any crash.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import signal
import sys
from types import FrameType

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
"""How long a stop lets in-flight calls finish before it cancels them."""

STOP_MARGIN_SECONDS = 10.0
"""How long past the grace for in-flight calls a stop may take to end streams and close the store."""

DEFAULT_LIMIT_SECONDS = GRACE_SECONDS + STOP_MARGIN_SECONDS
"""A daemon's stop limit unless it is given one (``--stop-limit``)."""

HUNG = re.compile(r"^Timeout \(\d+:\d\d:\d\d(?:\.\d+)?\)!$", re.MULTILINE)
"""faulthandler's first line when it ended a stop that ran past its limit: what a log is searched for."""

EXIT_SECONDS = 5.0
"""How long the interpreter may take to exit once the daemon has stopped (its thread pools' joins)."""


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
"""What stops a daemon gracefully: SIGTERM (a supervisor), SIGINT (Ctrl-C) and SIGHUP (its
terminal closed, an ssh session that started it ended). Left to the kernel, SIGHUP ended the
process at once: no drain, no stop line, calls cut. A daemon reloads nothing on it (its log is
stderr; `local start`'s file is appended to, so copytruncate rotates it)."""


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)  # the shell's code for a process a signal ended


def arm(limit: float) -> None:
    """The stop has begun: the next signal ends the process now, and ``limit`` seconds end it too.

    The kernel's default action ends the process whatever its threads do, but a PID namespace's
    first process (a container's daemon, run without an init) is sent only the signals it
    handles: there the handler exits, once the main thread runs Python again."""
    now = _exit_now if os.getpid() == 1 else signal.SIG_DFL
    for sig in STOP_SIGNALS:
        signal.signal(sig, now)
    _watch(limit)


def _watch(seconds: float) -> None:
    """faulthandler writes to a file descriptor: a caller's stderr replaced by one without (a test
    runner capturing it in the daemon's own process) falls back to the process's own."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            descriptor = stream.fileno() if stream is not None else -1
        except (AttributeError, ValueError, OSError):  # replaced by an object without one, or closed
            continue
        if descriptor >= 0:
            faulthandler.dump_traceback_later(seconds, exit=True, file=descriptor)
            return
    log.warning("no stderr with a file descriptor: this stop is not bounded in time")


def disarm() -> None:
    """The stop ended in time (or the daemon runs inside a caller's process, which outlives it)."""
    faulthandler.cancel_dump_traceback_later()


def bound_exit() -> None:
    """The daemon process is about to exit: its exit, too, may not hang."""
    _watch(EXIT_SECONDS)
