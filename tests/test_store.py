"""The LMDB engine: group commit, per-caller rollback, map growth, events."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stigmer_core.errors import AlreadyExists, Unavailable
from stigmer_core.store import LmdbStore, WriteTxn


def test_revision_is_bumped_once_per_transaction(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)

    def write(txn: WriteTxn) -> int:
        txn.put(b"k/a", b"1")
        txn.put(b"k/b", b"2")
        first = txn.write_revision()
        assert txn.write_revision() == first
        return first

    assert store.transact(write) == 1
    assert store.transact(write) == 2
    with store.read() as txn:
        assert txn.revision == 2
        assert [k for k, _ in txn.scan(b"k/")] == [b"k/a", b"k/b"]
        assert [k for k, _ in txn.scan(b"k/", after=b"k/a")] == [b"k/b"]
    store.close()


def test_a_failing_caller_rolls_back_alone_inside_a_shared_batch(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    gate = threading.Event()
    started = threading.Event()

    def blocker(txn: WriteTxn) -> None:
        # holds the leader role so the others queue up into one batch
        started.set()
        gate.wait(timeout=10)
        txn.put(b"k/blocker", b"")

    def good(i: int) -> None:
        def fn(txn: WriteTxn) -> int:
            txn.put(f"k/good{i}".encode(), b"")
            txn.append_event(b"good")
            return txn.write_revision()

        store.transact(fn)

    def bad(txn: WriteTxn) -> None:
        txn.put(b"k/bad", b"")
        txn.append_event(b"bad")
        raise AlreadyExists("taken")

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(store.transact, blocker)
        assert started.wait(timeout=10)
        commits_before = store.commits
        goods = [pool.submit(good, i) for i in range(5)]
        failing = pool.submit(store.transact, bad)
        while store._writes.queued < 6:  # every caller is queued behind the leader
            threading.Event().wait(0.01)
        gate.set()
        first.result(timeout=10)
        for future in goods:
            future.result(timeout=10)
        with pytest.raises(AlreadyExists):
            failing.result(timeout=10)
    assert store.commits - commits_before == 2  # the blocker's batch, then everyone else's
    with store.read() as txn:
        keys = [k for k, _ in txn.scan(b"k/")]
        events = [payload for _, payload in txn.events(0)]
        revisions = [rev for rev, _ in txn.events(0)]
    assert b"k/bad" not in keys
    assert sorted(keys) == sorted([b"k/blocker"] + [f"k/good{i}".encode() for i in range(5)])
    assert events == [b"good"] * 5
    assert revisions == sorted(set(revisions)), "each caller commits at its own revision"
    store.close()


def test_a_lone_caller_that_fails_leaves_nothing_of_its_write(tmp_path: Path) -> None:
    # a batch of one runs in the batch's own transaction, without a nested one: its failure
    # must abort that transaction, events, revision and counters included
    store = LmdbStore(tmp_path, durable=False)
    store.transact(lambda txn: (txn.put(b"k/kept", b"1"), txn.append_event(b"kept")))
    with store.read() as txn:
        revision_before = txn.revision

    def bad(txn: WriteTxn) -> None:
        txn.put(b"k/kept", b"overwritten")
        txn.put(b"k/bad", b"")
        txn.append_event(b"bad")
        txn.write_revision()
        raise AlreadyExists("taken")

    with pytest.raises(AlreadyExists):
        store.transact(bad)
    with store.read() as txn:
        assert txn.revision == revision_before
        assert txn.get(b"k/kept") == b"1"
        assert txn.get(b"k/bad") is None
        assert [payload for _, payload in txn.events(0)] == [b"kept"]
    store.transact(lambda txn: (txn.put(b"k/next", b""), txn.append_event(b"next")))
    with store.read() as txn:
        assert txn.revision == revision_before + 1
        assert [payload for _, payload in txn.events(0)] == [b"kept", b"next"]
    store.close()


def test_callers_before_a_failing_one_in_a_batch_are_written_once(tmp_path: Path) -> None:
    # a batch may run its callers' functions more than once (it first runs them in one
    # transaction, and again each nested when one fails): only the run committed is answered
    store = LmdbStore(tmp_path, durable=False)
    gate = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    def blocker(txn: WriteTxn) -> None:
        started.set()
        gate.wait(timeout=10)

    def good(txn: WriteTxn) -> int:
        runs.append("good")
        txn.put(b"k/good", str(len(runs)).encode())
        txn.append_event(b"good")
        return len(runs)

    def bad(txn: WriteTxn) -> None:
        runs.append("bad")
        txn.put(b"k/bad", b"")
        raise AlreadyExists("taken")

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(store.transact, blocker)
        assert started.wait(timeout=10)
        ok = pool.submit(store.transact, good)
        while store._writes.queued < 1:
            threading.Event().wait(0.01)
        failing = pool.submit(store.transact, bad)
        while store._writes.queued < 2:
            threading.Event().wait(0.01)
        gate.set()
        first.result(timeout=10)
        answer = ok.result(timeout=10)
        with pytest.raises(AlreadyExists):
            failing.result(timeout=10)
    assert runs[-2:] == ["good", "bad"]
    with store.read() as txn:
        assert txn.get(b"k/good") == str(answer).encode(), "the answer is the run that was committed"
        assert txn.get(b"k/bad") is None
        assert [payload for _, payload in txn.events(0)] == [b"good"]
    store.close()


def test_the_map_grows_instead_of_failing(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False, map_size=1 << 20)
    value = b"x" * 4096

    def fill(start: int) -> None:
        def fn(txn: WriteTxn) -> None:
            for i in range(start, start + 100):
                txn.put(f"big/{i:06d}".encode(), value)

        store.transact(fn)

    for start in range(0, 2000, 100):
        fill(start)
    with store.read() as txn:
        assert sum(1 for _ in txn.scan(b"big/")) == 2000
    assert store._env.info()["map_size"] > 1 << 20
    store.close()


def test_event_log_keeps_a_bounded_window(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False, event_retention=10)
    for i in range(25):
        store.transact(lambda txn, i=i: txn.append_event(str(i).encode()))
    with store.read() as txn:
        events = list(txn.events(0))
        assert txn.oldest_event_revision() == 16
        assert [rev for rev, _ in events] == list(range(16, 26))
        assert [rev for rev, _ in txn.events(20)] == list(range(21, 26))
    store.close()


def test_readers_see_a_snapshot_and_never_block_writers(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    store.transact(lambda txn: txn.put(b"k/1", b"old"))
    with store.read() as snapshot:
        store.transact(lambda txn: txn.put(b"k/1", b"new"))  # would deadlock if readers blocked writers
        assert snapshot.get(b"k/1") == b"old"
    with store.read() as fresh:
        assert fresh.get(b"k/1") == b"new"
    store.close()


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    store.close()
    with pytest.raises(Unavailable):
        store.transact(lambda txn: None)


def test_data_survives_reopen(tmp_path: Path) -> None:
    with LmdbStore(tmp_path) as store:
        store.transact(lambda txn: txn.put(b"k/durable", b"yes"))
    with LmdbStore(tmp_path) as store, store.read() as txn:
        assert txn.get(b"k/durable") == b"yes"
        assert txn.revision == 0  # raw puts do not allocate revisions


def test_the_next_batch_commits_while_the_last_one_syncs() -> None:
    """A leader hands its role on before waiting for durability; its callers are
    answered only after the wait, the next batch's callers need not wait for it."""
    from stigmer_core.store.group_commit import GroupCommit, Pending

    syncing = threading.Event()
    release = threading.Event()
    committed: list[str] = []

    def commit_batch(batch: list[Pending]) -> object:
        for pending in batch:
            pending.result = pending.fn(None)
            committed.append(pending.result)
        if "first" in committed and len(committed) == 1:

            def settle() -> None:
                syncing.set()
                assert release.wait(timeout=10)

            return settle
        return None

    writes = GroupCommit(commit_batch, max_batch=8)  # type: ignore[arg-type]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(writes.transact, lambda txn: "first")
        assert syncing.wait(timeout=10)
        second = pool.submit(writes.transact, lambda txn: "second")
        assert second.result(timeout=10) == "second"  # committed and answered while the first syncs
        assert not first.done()  # not answered before its batch is durable
        release.set()
        assert first.result(timeout=10) == "first"
    assert writes.close()


def test_a_sync_that_fails_after_the_commit_is_not_reported_as_durable(tmp_path: Path) -> None:
    import lmdb

    store = LmdbStore(tmp_path, durable=True)
    real = store._env

    class FailingSync:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def sync(self, force: bool = False) -> None:
            raise lmdb.Error("simulated sync failure")

    store._env = FailingSync()  # type: ignore[assignment]
    with pytest.raises(Unavailable, match="may not survive a crash"):
        store.transact(lambda txn: txn.put(b"k/1", b"v"))
    store._env = real
    store.transact(lambda txn: txn.put(b"k/2", b"v"))  # the store goes on
    with store.read() as txn:
        assert txn.get(b"k/2") == b"v"
    store.close()


def test_events_past_the_bound_are_pruned_after_commits_that_looked_at_nothing(tmp_path: Path) -> None:
    """The oldest event is remembered so most commits skip the look; the bound still holds."""
    store = LmdbStore(tmp_path, durable=False, event_retention=50)
    for i in range(120):
        store.transact(lambda txn, i=i: txn.append_event(str(i).encode()))
    with store.read() as txn:
        assert txn.oldest_event_revision() == 71
        assert len(list(txn.events(0))) == 50
    store.close()


def test_time_holding_the_write_lock_is_counted_as_wall_and_cpu(tmp_path: Path) -> None:
    """What the bench reads to tell whether the write lock limits the write rate: a batch
    that works under the lock adds its CPU, one that sleeps there adds wall time only."""
    store = LmdbStore(tmp_path, durable=False)
    assert (store.commit_seconds, store.commit_cpu_seconds) == (0.0, 0.0)

    def busy(txn: WriteTxn) -> None:
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
        txn.put(b"k/busy", b"1")

    store.transact(busy)
    worked_wall, worked_cpu = store.commit_seconds, store.commit_cpu_seconds
    assert worked_cpu >= 0.05
    assert worked_wall >= worked_cpu * 0.95  # one thread's CPU fits in its wall time

    def idle(txn: WriteTxn) -> None:
        time.sleep(0.1)
        txn.put(b"k/idle", b"1")

    store.transact(idle)
    assert store.commit_seconds - worked_wall >= 0.1
    assert store.commit_cpu_seconds - worked_cpu < 0.05
    store.close()
