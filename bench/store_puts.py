"""The raw LMDB store, no pipeline: what the write path can give at best.

One put per transaction from one thread is bounded by the disk's durable
commit rate; the same from many threads shows how much group commit recovers
of it; many puts in one transaction show what a commit carrying a full batch
costs. The create rows are then read against these: the pipeline's share of
a create is the gap between them.

Two rows without fsync show what the event log costs a write: a put and an
event per transaction on a log within its bounds, and on a log at its
revision bound, where every commit prunes (a busy store's steady state), with
the revisions held by two orgs so the prune picks between shares.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from bench import drive
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core.store import EventRetention, LmdbStore, WriteTxn

VALUE = b"v" * 660
"""As large as a stored Agent."""


def _key(scenario: str, i: int) -> bytes:
    return f"bench/{scenario}/{i:012d}".encode()


def _with_commits(store: LmdbStore, measure: Callable[[], Measurement], puts_per_call: int) -> Measurement:
    # Only the count: each round has a store of its own, so its before/after
    # would restart from zero and mean nothing across rounds.
    before = store.commits
    measured = measure()
    return measured.with_counters(commits=store.commits - before, puts=measured.calls * puts_per_call)


def _events(budget: Budget) -> list[Measurement]:
    """A put and an event per transaction, no fsync: within the log's bounds, and at its revision bound."""
    found = []
    for name, retention in (
        ("store.event.nosync", EventRetention()),
        ("store.event_pruning.nosync", EventRetention(max_revisions=budget.warmup)),
    ):
        with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data, LmdbStore(
            data, durable=False, retention=retention
        ) as store:

            def write(i: int) -> None:
                org = "busy" if i % 4 else "quiet"
                store.transact(lambda txn: (txn.put(_key("event", i), VALUE), txn.append_event(VALUE, org)))

            drive.warm(write, budget.warmup * 2)  # past the revision bound: every later commit prunes one
            found.append(drive.serial(name, write, count=budget.store_puts, seconds=budget.seconds))
    return found


def run(budget: Budget) -> list[Measurement]:
    return _puts(budget) + _events(budget)


def _puts(budget: Budget) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-") as data, LmdbStore(data) as store:

        def put_one(scenario: str) -> drive.Call:
            return lambda i: store.transact(lambda txn: txn.put(_key(scenario, i), VALUE))

        def put_batch(i: int) -> None:
            def body(txn: WriteTxn) -> None:
                for j in range(budget.batch_puts):
                    txn.put(_key("batch", i * budget.batch_puts + j), VALUE)

            store.transact(body)

        drive.warm(put_one("warm"), budget.warmup)
        threads, seconds = budget.store_threads, budget.seconds
        single = f"store.put.t{threads}"
        batched = f"store.batch{budget.batch_puts}"
        return [
            _with_commits(
                store, lambda: drive.serial("store.put.t1", put_one("t1"), count=budget.store_puts, seconds=seconds), 1
            ),
            _with_commits(
                store,
                lambda: drive.threads(
                    single, put_one(single), workers=threads, count=budget.store_puts, seconds=seconds
                ),
                1,
            ),
            _with_commits(
                store,
                lambda: drive.serial(batched, put_batch, count=budget.batches, seconds=seconds),
                budget.batch_puts,
            ),
        ]
