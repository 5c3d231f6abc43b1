"""The CPU an LMDB store spends in its own commit calls, to leave it out of a request's figure.

The framework's CPU per create was the create's CPU less a raw one-put
transaction's, which leaves in the part of the create's own commit that a
bigger transaction costs more: an Agent create writes about twenty keys
(two objects, their indexes, two events and the log's counters) across as
many pages, and LMDB writes each dirty page out when the transaction commits.
``commits_timed`` measures that directly: it puts a stand-in in front of the
store's environment whose write transactions time their ``commit`` (the
caller's nested transaction and the batch's), and leaves every other call
to the real transaction. The stand-in's own overhead stays in the request's
figure, so the result errs high.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


class _Timed:
    """A write transaction whose commits add their CPU to ``spent``."""

    __slots__ = ("_spent", "txn")

    def __init__(self, txn: Any, spent: list[float]) -> None:
        self.txn = txn
        self._spent = spent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def commit(self) -> None:
        begin = time.thread_time()
        self.txn.commit()
        self._spent[0] += time.thread_time() - begin


class _TimedEnv:
    __slots__ = ("_env", "_spent")

    def __init__(self, env: Any, spent: list[float]) -> None:
        self._env = env
        self._spent = spent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, *args: Any, write: bool = False, parent: Any = None, **kwargs: Any) -> Any:
        if isinstance(parent, _Timed):
            parent = parent.txn
        txn = self._env.begin(*args, write=write, parent=parent, **kwargs)
        return _Timed(txn, self._spent) if write else txn


@contextlib.contextmanager
def commits_timed(store: Any) -> Iterator[list[float]]:
    """While open, ``[seconds]`` of CPU ``store``'s commit calls took (an LMDB store only)."""
    spent = [0.0]
    env = store._env
    store._env = _TimedEnv(env, spent)
    try:
        yield spent
    finally:
        store._env = env
