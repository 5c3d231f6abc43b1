"""Writes queued by callers with no thread of their own (``submit``), beside callers that wait in one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stigmer_core.errors import AlreadyExists, Unavailable
from stigmer_core.store import LmdbStore, WriteTxn
from stigmer_core.store.group_commit import Pending

WAIT = 10.0


class Answers:
    """Each queued write's notification, counted; ``wait`` until all came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[int, int] = {}
        self.threads: set[str] = set()
        self.all = threading.Event()
        self.expected = 0

    def notify(self, number: int) -> None:
        with self.lock:
            self.count[number] = self.count.get(number, 0) + 1
            self.threads.add(threading.current_thread().name)
            if sum(self.count.values()) >= self.expected:
                self.all.set()


def _put(name: str, fail: bool = False) -> Callable[[WriteTxn], int]:
    def fn(txn: WriteTxn) -> int:
        txn.put(f"k/{name}".encode(), b"")
        txn.append_event(name.encode())
        txn.on_commit(lambda: None)
        if fail:
            raise AlreadyExists(f"{name} is taken")
        return txn.write_revision()

    return fn


def test_queued_writes_share_commits_and_each_is_answered_once(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=True)
    gate, started = threading.Event(), threading.Event()

    def blocker(txn: WriteTxn) -> None:  # leads, so the queued writes line up behind it
        started.set()
        gate.wait(timeout=WAIT)
        txn.put(b"k/blocker", b"")

    answers = Answers()
    answers.expected = 20
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(store.transact, blocker)
        assert started.wait(timeout=WAIT)
        before = store.commits
        pendings: list[Pending] = [
            store.submit(_put(f"q{i}", fail=i == 7), lambda i=i: answers.notify(i))
            for i in range(20)
        ]
        assert store._writes.queued == 20
        gate.set()
        first.result(timeout=WAIT)
    assert answers.all.wait(timeout=WAIT)
    assert answers.count == {i: 1 for i in range(20)}
    assert store.commits - before == 2  # the blocker's commit, then all twenty queued writes in one
    failed = pendings[7]
    assert isinstance(failed.error, AlreadyExists) and failed.result is None and failed.callbacks == []
    revisions = [p.result for i, p in enumerate(pendings) if i != 7]
    assert all(p.error is None and p.callbacks == [] for i, p in enumerate(pendings) if i != 7)  # ran before the answer
    assert revisions == sorted(set(revisions))
    with store.read() as txn:
        keys = {k for k, _ in txn.scan(b"k/")}
    assert b"k/q7" not in keys and len(keys) == 20  # the blocker and nineteen queued writes
    store.close()


def test_a_queued_write_with_no_leader_is_led_on_a_committer_thread(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    answers = Answers()
    answers.expected = 1
    pending = store.submit(_put("alone"), lambda: answers.notify(0))
    assert answers.all.wait(timeout=WAIT)
    assert pending.error is None and pending.result == 1
    assert answers.threads == {next(iter(answers.threads))} and next(iter(answers.threads)).startswith("stigmer-commit")
    store.close()


def test_threads_and_queued_callers_mixed_are_all_answered(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=True)
    answers = Answers()
    answers.expected = 200
    with ThreadPoolExecutor(8) as pool:
        waited = [pool.submit(store.transact, _put(f"t{i}")) for i in range(200)]
        queued = [store.submit(_put(f"s{i}"), lambda i=i: answers.notify(i)) for i in range(200)]
        results = [future.result(timeout=WAIT) for future in waited]
    assert answers.all.wait(timeout=WAIT)
    assert answers.count == {i: 1 for i in range(200)}
    revisions = results + [p.result for p in queued]
    assert len(set(revisions)) == 400 and all(p.error is None for p in queued)
    with store.read() as txn:
        assert txn.revision == 400
        assert sum(1 for _ in txn.scan(b"k/")) == 400
    store.close()


def test_close_waits_for_queued_writes_and_then_refuses_them(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=True)
    answers = Answers()
    answers.expected = 50
    for i in range(50):
        store.submit(_put(f"c{i}"), lambda i=i: answers.notify(i))
    store.close()  # returns once every queued write is answered
    assert answers.all.is_set() and len(answers.count) == 50
    with pytest.raises(Unavailable, match="closed"):
        store.submit(_put("late"), lambda: None)
    reopened = LmdbStore(tmp_path)
    with reopened.read() as txn:
        assert sum(1 for _ in txn.scan(b"k/")) == 50
    reopened.close()


def test_a_queued_writes_callbacks_run_before_it_is_answered_even_with_nobody_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller may be gone (a deadline, a cancel) while its write still commits: what must
    follow the commit (a run key destroyed, a token forgotten) must follow it all the same. The
    write committed: a callback's own refusal (a StigmerError) is its answer, but anything else it
    raises (an OSError) is logged, not answered, which read as a write that had failed."""
    store = LmdbStore(tmp_path, durable=True)
    ran: list[str] = []
    told = threading.Event()

    def write(txn: WriteTxn) -> None:
        txn.put(b"k/run", b"")
        txn.on_commit(lambda: ran.append(threading.current_thread().name))

    def failing(txn: WriteTxn) -> str:
        txn.put(b"k/other", b"")
        txn.on_commit(lambda: (_ for _ in ()).throw(OSError("the key file could not be erased")))
        return "committed"

    def refused(txn: WriteTxn) -> str:
        txn.put(b"k/third", b"")
        txn.on_commit(lambda: (_ for _ in ()).throw(Unavailable("may not survive a crash")))
        return "committed"

    gone = store.submit(write, lambda: None)  # nobody will look at the answer
    answered = store.submit(failing, told.set)
    assert told.wait(timeout=WAIT)
    told.clear()
    said = store.submit(refused, told.set)
    assert told.wait(timeout=WAIT)
    store.close()  # waits for every queued write
    assert len(ran) == 1 and ran[0].startswith("stigmer-commit") and gone.callbacks == []
    assert answered.error is None and answered.result == "committed", "the write stands"
    assert "the key file could not be erased" in caplog.text and "the write stands" in caplog.text
    assert isinstance(said.error, Unavailable) and said.result is None, "a callback's refusal is the answer"
