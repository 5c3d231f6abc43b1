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

An engine whose commit is visible before it is durable (LMDB writes its meta
page and syncs it apart) returns from ``commit_batch`` a function that waits
for durability. The leader then hands its role on first and waits after, so
the next batch's pipelines run while this one's sync is on the disk, and the
callers are still answered only once their writes are durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from stigmer_core import errors

T = TypeVar("T")
Settle = Callable[[], None]
"""Waits until a committed batch is durable; raises when it cannot be made so."""
CommitBatch = Callable[["list[Pending]"], "Settle | None"]


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

    def __init__(
        self, commit_batch: CommitBatch, max_batch: int, settle_failure: Callable[[BaseException], BaseException] = lambda e: e
    ) -> None:
        """``settle_failure`` turns an error of a batch's settle function into what its callers are told."""
        self._commit_batch = commit_batch
        self._settle_failure = settle_failure
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
        """Commit batches until ``own`` is done, then hand the role to the next waiter
        (before waiting for the last batch to be durable, when the engine lets it)."""
        handed = False
        try:
            while not own.done:
                with self._mutex:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                settle = None
                try:
                    settle = self._commit_batch(batch)
                finally:
                    if settle is not None:
                        if own in batch:  # the last batch this leader commits: the next one need not wait
                            self._hand_on()
                            handed = True
                        self._settle(batch, settle)
                    for pending in batch:
                        pending.done = True
                        if pending is not own:
                            pending.wake.release()
        finally:
            if not handed:
                self._hand_on()

    def _settle(self, batch: list[Pending], settle: Settle) -> None:
        try:
            settle()
        except BaseException as exc:  # committed, but not known durable: nobody is told it is
            failure = self._settle_failure(exc)
            for pending in batch:
                pending.error = pending.error or failure
                pending.result = None

    def _hand_on(self) -> None:
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
