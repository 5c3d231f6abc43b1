"""Group commit: many callers' writes sharing one durable commit.

Both engines serialize writers (LMDB has one writer; PostgreSQL orders them
by a row lock) and pay a sync per commit, so throughput under many callers
comes from committing several callers' functions together. The first caller
to find no batch in progress becomes the leader: it takes the queued writes
(up to ``max_batch``), hands them to the engine's ``commit_batch``, and
wakes exactly the callers that batch served; then it hands the leader role
to the next waiter, so a commit costs no wake-up of callers still queued.
What a batch is (one transaction, run again with nested LMDB transactions
or PostgreSQL savepoints when a caller fails) is the engine's business; this module only queues, leads and answers.

An engine whose commit is visible before it is durable (LMDB writes its meta
page and syncs it apart) returns from ``commit_batch`` a function that waits
for durability. The leader then hands its role on first and waits after, so
the next batch's pipelines run while this one's sync is on the disk, and the
callers are still answered only once their writes are durable.

A caller with no thread of its own to wait on (the asyncio server's) queues
its write with ``submit`` and a function to call once it is answered; its
write's ``on_commit`` callbacks run on the committer thread before that, so
they run even when the caller has gone away meanwhile. When no
batch is in progress such a write is led by a committer thread, one batch per
task, which hands the leader role on before it waits for durability, as a
caller's thread does; many such callers cost one thread switch per batch,
not one per caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

from stigmer_core import errors

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMITTER_THREADS = 2
"""One commits the next batch while the other waits for the last one to be durable."""
Settle = Callable[[], None]
"""Waits until a committed batch is durable; raises when it cannot be made so."""
CommitBatch = Callable[["list[Pending]"], "Settle | None"]


class Pending:
    """One caller's write. ``wake`` is held until the caller is answered or
    made the next leader, so a commit wakes exactly the callers it served.

    The engine's ``commit_batch`` sets ``result`` or ``error`` and the
    ``callbacks`` (its ``on_commit`` ones) of every write it was given.
    ``notify`` (a ``submit``'s) is called instead of releasing ``wake``."""

    __slots__ = ("callbacks", "done", "error", "fn", "notify", "result", "wake")

    def __init__(self, fn: Callable[[Any], Any], notify: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[], None]] = []
        self.notify = notify
        self.wake = threading.Lock()
        if notify is None:
            self.wake.acquire()


def _run_callbacks(pending: Pending) -> None:
    """A queued write's ``on_commit`` callbacks, run here before its caller is told: that
    caller may be gone (a deadline, a cancel) while the write still committed, and what must
    follow a commit (a finished run's key destroyed, a revoked token forgotten) must follow it
    whether or not anybody waits for the answer (``run_after_commit``)."""
    callbacks, pending.callbacks = pending.callbacks, []
    if pending.error is not None or not callbacks:
        return
    told = run_after_commit(callbacks)
    if told is not None:
        pending.error = told
        pending.result = None


def run_after_commit(callbacks: list[Callable[[], None]]) -> errors.StigmerError | None:
    """Run every callback of a committed write, each whatever the ones before it did; what the
    write's caller is told instead of its result, if anything. The write committed: a callback's
    own refusal (a ``StigmerError``: a key sync that failed, "may not survive a crash") is told,
    but anything else it raises (a full disk, no file descriptor left) is logged, not answered
    INTERNAL, which read as a write that failed (a cancel answered so had happened)."""
    told: errors.StigmerError | None = None
    for callback in callbacks:
        try:
            callback()
        except errors.StigmerError as exc:
            told = told or exc
        except Exception:
            log.warning("after a committed write, %r failed; the write stands", callback, exc_info=True)
    return told


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
        self._committer: futures.ThreadPoolExecutor | None = None
        self.closed = False

    def _enqueue(self, pending: Pending) -> bool:
        """Queue a write; True when no batch is in progress, so its caller must see one led."""
        with self._mutex:
            if self.closed:
                raise errors.Unavailable("the store is closed")
            self._in_flight += 1
            self._queue.append(pending)
            lead = not self._leading
            if lead:
                self._leading = True
        return lead

    def _answered(self) -> None:
        with self._mutex:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.notify_all()

    def transact(self, fn: Callable[[Any], T]) -> T:
        pending = Pending(fn)
        lead = self._enqueue(pending)
        try:
            if not lead:
                pending.wake.acquire()  # answered, or handed the leader role
            if not pending.done:
                self._lead(pending)
        finally:
            self._answered()
        if pending.error is not None:
            raise pending.error
        if pending.callbacks:
            told = run_after_commit(pending.callbacks)
            if told is not None:
                raise told
        result: T = pending.result
        return result

    def submit(self, fn: Callable[[Any], Any], notify: Callable[[], None]) -> Pending:
        """Queue ``fn`` without waiting: ``notify`` is called, on the thread that answered it, once
        the returned write's ``result`` or ``error`` is final (and durable) and its ``on_commit``
        callbacks have run there (a failing one is its ``error``)."""
        pending = Pending(fn, notify)
        if self._enqueue(pending):
            self._lead_elsewhere()
        return pending

    def _lead_elsewhere(self) -> None:
        """Lead the next batch on a committer thread: its writes' callers have no thread to lead on."""
        with self._mutex:
            if self._committer is None:
                self._committer = futures.ThreadPoolExecutor(COMMITTER_THREADS, thread_name_prefix="stigmer-commit")
            committer = self._committer
        committer.submit(self._lead_one)

    def _take_batch(self) -> list[Pending]:
        with self._mutex:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        return batch

    def _lead_one(self) -> None:
        batch = self._take_batch()
        settle = None
        try:
            settle = self._commit_batch(batch)
        except BaseException as exc:  # the engine answers its own failures; this is a bug, told to every caller
            log.exception("group commit: a batch failed outside the engine's handling")
            for pending in batch:
                pending.error = pending.error or exc
        finally:
            self._hand_on()
            if settle is not None:
                self._settle(batch, settle)
            self._answer(batch, None)

    def _answer(self, batch: list[Pending], own: Pending | None) -> None:
        for pending in batch:
            pending.done = True
            if pending is own:
                continue
            if pending.notify is None:
                pending.wake.release()
                continue
            _run_callbacks(pending)
            self._answered()
            try:
                pending.notify()
            except Exception:  # the caller's loop is gone: nobody is left to answer
                log.exception("group commit: a write's caller could not be told")

    def _lead(self, own: Pending) -> None:
        """Commit batches until ``own`` is done, then hand the role to the next waiter
        (before waiting for the last batch to be durable, when the engine lets it)."""
        handed = False
        try:
            while not own.done:
                batch = self._take_batch()
                settle = None
                try:
                    settle = self._commit_batch(batch)
                finally:
                    if settle is not None:
                        if own in batch:  # the last batch this leader commits: the next one need not wait
                            self._hand_on()
                            handed = True
                        self._settle(batch, settle)
                    self._answer(batch, own)
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
            if not self._queue:
                self._leading = False
                return
            head = self._queue[0]
            if head.notify is None:
                head.wake.release()
                return
        self._lead_elsewhere()

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
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.shutdown(wait=True)
        return True
