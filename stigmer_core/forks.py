"""Which process opened an LMDB store, so that a forked child is told why it cannot use it.

LMDB's environment belongs to the process that opened it: a child forked after the parent
opened a store (gunicorn's ``--preload``, ``multiprocessing``'s fork context) must neither use
the parent's (its reads and writes went through silently, which LMDB forbids) nor open the
store again (py-lmdb then said the store was "already open in this process", which the child
never did). Forks are counted rather than the process id asked for at each call: a call pays
an integer compare.
"""

from __future__ import annotations

import os

_generation = [0]
"""Bumped in every forked child: what was opened in another generation is the parent's."""

_opened: dict[str, int] = {}
"""An LMDB store's directory (resolved) -> the process id that opened it, while it is open."""


def _forked() -> None:
    _generation[0] += 1


os.register_at_fork(after_in_child=_forked)


def generation() -> int:
    return _generation[0]


def opened(path: str) -> None:
    _opened[path] = os.getpid()


def closed(path: str) -> None:
    if _opened.get(path) == os.getpid():
        del _opened[path]


def opener(path: str) -> int | None:
    """The process that has the store in ``path`` open (this one, or the parent it was forked from)."""
    return _opened.get(path)


def forked_message(path: str, pid: int | None) -> str:
    who = f"process {pid}" if pid is not None else "the parent process"
    return (
        f"the store in {path} was opened by {who} before this process was forked from it, and an open store "
        "(LMDB's environment, a database's connections) cannot be used in a forked child: open it in the process "
        "that uses it, after forking (with gunicorn's --preload, open it in a post_fork hook, not at import), or "
        "reach it through a daemon (stigmer local start)"
    )
