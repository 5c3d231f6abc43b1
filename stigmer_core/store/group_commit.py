"""Group commit: many callers' writes sharing one durable commit.

Both engines serialize writers (LMDB has one writer; PostgreSQL orders them
by a row lock) and pay a sync per commit, so throughput under many callers
comes from committing several callers' functions together. The first caller
to find no batch in progress becomes the leader: it takes the queued writes
(up to ``max_batch``), hands them to the engine's ``commit_batch``, and
wakes exactly the callers that batch served; then it hands the leader role
to the next waiter, so a commit costs no wake-up of callers still queued.
What a batch is (nested LMDB transactions, PostgreSQL savepoints) is the
engine's business; this module only queues, leads and answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from stigmer_core import errors

T = TypeVar("T")


class Pending:
    """One caller's write. ``wake`` is held until the caller is answered or
    made the next leader, so a commit wakes exactly the callers it served.

    The engine's ``commit_batch`` sets ``result`` or ``error`` and the
    ``callbacks`` (its ``on_commit`` ones) of every write it was given."""

    __slots__ = ("callbacks", "done", "error", "fn", "result", "wake")

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[], None]] = []
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """The write queue of one store; ``close`` refuses new writes and waits for those in flight."""

    def __init__(self, commit_batch: Callable[[list[Pending]], None], max_batch: int) -> None:
        self._commit_batch = commit_batch
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._drained = threading.Condition(self._mutex)
        self._queue: list[Pending] = []
        self._leading = False
        self._in_flight = 0
        self.closed = False

    def transact(self, fn: Callable[[Any], T]) -> T:
        pending = Pending(fn)
        with self._mutex:
            if self.closed:
                raise errors.Unavailable("the store is closed")
            self._in_flight += 1
            self._queue.append(pending)
            lead = not self._leading
            if lead:
                self._leading = True
        try:
            if not lead:
                pending.wake.acquire()  # answered, or handed the leader role
            if not pending.done:
                self._lead(pending)
        finally:
            with self._mutex:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._drained.notify_all()
        if pending.error is not None:
            raise pending.error
        for callback in pending.callbacks:
            callback()
        result: T = pending.result
        return result

    def _lead(self, own: Pending) -> None:
        """Commit batches until ``own`` is done, then hand the role to the next waiter."""
        try:
            while not own.done:
                with self._mutex:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                try:
                    self._commit_batch(batch)
                finally:
                    for pending in batch:
                        pending.done = True
                        if pending is not own:
                            pending.wake.release()
        finally:
            with self._mutex:
                if self._queue:
                    self._queue[0].wake.release()
                else:
                    self._leading = False

    @property
    def queued(self) -> int:
        """Writes waiting for a leader to take them (tests use it to line callers up)."""
        return len(self._queue)

    def close(self) -> bool:
        """Refuse new writes and wait until every write in flight is answered;
        False when the queue was already closed."""
        with self._mutex:
            if self.closed:
                return False
            self.closed = True
            while self._in_flight:
                self._drained.wait()
        return True
