"""A person's Ctrl-C, told apart from code that raises KeyboardInterrupt.

A step's code raising KeyboardInterrupt is a bug answered INTERNAL (``pipeline.step``), so
that it cannot end a server's thread. In a command serving its store in process, the steps
run in the command's own main thread, where a person's Ctrl-C arrives as the same exception:
answered as a fault, it failed the one write running and the command went on to the next.
Python cannot tell the two apart by the exception, so the command line installs this SIGINT
handler, which notes that the signal came before it raises; a daemon installs its own (it
drains). A program using the library in process gets it too, in place of Python's own default
handler only (``note_if_default``, when it asks for an in-process channel from its main
thread): its Ctrl-C during a call became the call's INTERNAL, and never reached its ``except
KeyboardInterrupt``. The handler raises KeyboardInterrupt as Python's does; a handler of the
program's own is left alone.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_received = False


def install() -> None:
    """Note every SIGINT before raising KeyboardInterrupt as Python's own handler does (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def received() -> bool:
    """Whether a SIGINT came through ``install``'s handler: a KeyboardInterrupt is then a person's."""
    return _received


def note_if_default() -> None:
    """``install``, where the main thread's SIGINT handler is Python's own default: it behaves the
    same, and a Ctrl-C during an in-process call then passes on as KeyboardInterrupt."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_sigint)
