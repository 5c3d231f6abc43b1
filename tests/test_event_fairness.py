"""The event log's bounds are shared fairly between orgs, on every engine.

The log is one for every org of a store, within one set of bounds. When a
commit finds it past the revision or byte bound, the org holding the most
(revisions, or bytes) loses its oldest revision first, so an org that writes
a lot, or writes large objects, shortens its own resume window before anyone
else's; an org that holds less keeps its history. Age is the same for every
org: the oldest revisions go first whatever their org.

A watch or subscribe learns whether its resume point is gone from
``compacted_through``: the newest revision pruned from its org (or from the
shared partition, whose revisions count for every org). Only the store is
used here; tests/test_watch_fairness.py holds the same through the API.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from stigmer_core import Conflict, InvalidArgument
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.pipeline.events import Cursor, EventHub
from stigmer_core.store import Store, keys
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.retention import EventRetention
from tests import engine_support
from tests.engine_support import OpenStore, counted_bytes, retained

engine = engine_support.engine  # the fixture every test here takes


def _append(store: Store, partition: str, payload: bytes) -> int:
    return store.transact(lambda txn: txn.append_event(payload, partition))


def _compacted(store: Store, partitions: list[str] | None) -> int:
    with store.read() as txn:
        return txn.compacted_through(partitions)


def test_an_org_writing_large_objects_loses_its_own_history_first(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_bytes=10_000))) as store:
        quiet = [_append(store, "quiet", b"q" * 100) for _ in range(5)]
        loud = [_append(store, "loud", b"l" * 500) for _ in range(100)]
        kept = [revision for revision, _ in retained(store)]
        assert kept[:5] == quiet  # the quiet org's whole history survives the flood
        assert kept[5:] == loud[-len(kept[5:]) :]  # the loud org keeps its newest, in order
        assert sum(len(p) for _, p in retained(store)) <= 10_000 + 500  # pruned before each append
        assert counted_bytes(store) == sum(len(p) for _, p in retained(store))
        pruned = loud[-len(kept[5:]) - 1]
        assert _compacted(store, ["quiet"]) == 0
        assert _compacted(store, ["loud"]) == pruned
        assert _compacted(store, ["quiet", "loud"]) == pruned
        assert _compacted(store, None) == pruned
        assert _compacted(store, ["never-wrote"]) == 0


def test_an_org_writing_often_loses_its_own_history_first(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_revisions=20))) as store:
        quiet = [_append(store, "quiet", b"q") for _ in range(5)]
        loud = [_append(store, "loud", b"l") for _ in range(100)]
        kept = [revision for revision, _ in retained(store)]
        assert kept == quiet + loud[-15:]  # at most 20 revisions, the quiet org's all kept
        assert _compacted(store, ["quiet"]) == 0
        assert _compacted(store, ["loud"]) == loud[-16]


def test_orgs_over_the_bound_together_end_up_with_even_shares(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_revisions=20))) as store:
        written: dict[str, list[int]] = {"a": [], "b": []}
        for _ in range(30):
            for org in ("a", "b"):
                written[org].append(_append(store, org, org.encode()))
        kept = {revision for revision, _ in retained(store)}
        assert len(kept) == 20
        held = {org: [r for r in revisions if r in kept] for org, revisions in written.items()}
        assert abs(len(held["a"]) - len(held["b"])) <= 2
        for org, revisions in written.items():  # each keeps its newest: the oldest go first
            assert held[org] == revisions[-len(held[org]) :]
            assert _compacted(store, [org]) == revisions[-len(held[org]) - 1]


def test_a_revision_naming_two_orgs_counts_for_every_org_when_pruned(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_revisions=2))) as store:

        def both(txn: object) -> int:
            txn.append_event(b"one", "a")  # type: ignore[attr-defined]
            return txn.append_event(b"two", "b")  # type: ignore[attr-defined]

        shared = [store.transact(both), store.transact(both)]
        _append(store, "c", b"c")  # the shared partition holds the most: its oldest goes
        assert [r for r, _ in retained(store)] == [shared[1], shared[1], shared[1] + 1]
        assert _compacted(store, ["c"]) == shared[0]  # what went may have been any org's
        assert _compacted(store, ["someone-else"]) == shared[0]


def test_events_older_than_the_age_bound_go_whatever_their_org(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_age_seconds=0))) as store:
        written = [_append(store, org, b"x") for org in ("a", "b", "a", "b", "c")]
        assert [r for r, _ in retained(store)] == written[-1:]
        assert _compacted(store, ["a"]) == written[2]
        assert _compacted(store, ["b"]) == written[3]
        assert _compacted(store, ["c"]) == 0
        assert _compacted(store, None) == written[3]


def test_the_shares_are_kept_across_a_reopen(engine: OpenStore) -> None:
    with contextlib.closing(engine(EventRetention(max_revisions=20))) as store:
        quiet = [_append(store, "quiet", b"q") for _ in range(5)]
        loud = [_append(store, "loud", b"l") for _ in range(30)]
    with contextlib.closing(engine(EventRetention(max_revisions=20))) as store:
        assert _compacted(store, ["loud"]) == loud[-16]
        loud += [_append(store, "loud", b"l") for _ in range(10)]
        assert [r for r, _ in retained(store)] == quiet + loud[-15:]
        assert _compacted(store, ["quiet"]) == 0
        assert _compacted(store, ["loud"]) == loud[-16]


def test_events_without_an_org_share_one_partition_with_the_same_bounds(engine: OpenStore) -> None:
    """A store used without orgs (and the Store protocol's default) keeps the log as it always did."""
    with contextlib.closing(engine(EventRetention(max_revisions=3))) as store:
        written = [store.transact(lambda txn: txn.append_event(b"e")) for _ in range(10)]
        assert [r for r, _ in retained(store)] == written[-3:]
        assert _compacted(store, ["anyone"]) == written[-4]
        with store.read() as txn:
            assert txn.oldest_event_revision() == written[-3]


def test_an_lmdb_log_from_before_the_shares_is_counted_in_the_shared_partition(tmp_path: Path) -> None:
    """Its events' orgs are unknown, so they count for every org: a resume before its oldest kept
    revision is still refused, and its revisions are pruned first once it holds the most."""
    with LmdbStore(tmp_path, durable=False, retention=EventRetention(max_revisions=5)) as store:
        for _ in range(10):
            _append(store, "", b"old")

        def as_before(txn: Any) -> None:  # the layout a store had before shares were kept
            for prefix in (keys.EVENT_PARTS, keys.EVENT_PART_REVISIONS, keys.EVENT_TIMES):
                for key, value in list(txn.scan(prefix)):
                    txn.delete(key)
                    if prefix == keys.EVENT_TIMES:
                        txn.put(key, value[:8])
            txn.delete(keys.EVENT_REVISIONS)
            txn.delete(keys.EVENT_COMPACTED)

        store.transact(as_before)
    with LmdbStore(tmp_path, durable=False, retention=EventRetention(max_revisions=5)) as store:
        assert [r for r, _ in retained(store)] == [6, 7, 8, 9, 10]
        assert _compacted(store, ["anyone"]) == 5
        quiet = _append(store, "quiet", b"q")
        loud = [_append(store, "loud", b"l") for _ in range(4)]
        # the old revisions went first while they held the most, then loud's own
        assert [r for r, _ in retained(store)] == [10, quiet, *loud[1:]]
        assert _compacted(store, ["quiet"]) == 9
        assert _compacted(store, ["loud"]) == loud[0]
        assert counted_bytes(store) == 3 + 1 + 3


def test_events_pruned_before_the_dispatcher_read_them_are_not_papered_over(engine: OpenStore) -> None:
    """The org holding the most loses its oldest first, which can be a revision written a moment
    ago: the dispatcher's cache must not serve the streams a log with that gap in it."""
    with contextlib.closing(engine(EventRetention(max_bytes=100))) as store:
        hub = EventHub(store)
        hub._thread = threading.current_thread()  # as if dispatching: reads of recent events use the cache
        try:
            event = event_pb2.ResourceEvent(kind="K", object=b"x" * 500).SerializeToString()
            first = _append(store, "loud", event)
            _append(store, "loud", event)  # the byte bound takes the first before this one is appended
            assert _compacted(store, ["loud"]) == first
            hub._step()  # one dispatcher step: it finds the first revision gone
            with pytest.raises(Conflict, match=rf"revision {first - 1} compacted"):
                hub.read("K", Cursor.after(first - 1), ["loud"])
        finally:
            hub._thread = None
            hub.close()


def test_callers_sharing_commits_some_rolled_back_leave_each_org_its_newest(engine: OpenStore) -> None:
    """Group commit hands the shares from caller to caller within a batch; a caller whose write
    fails after it appended (and perhaps pruned) must leave them as they were."""
    with contextlib.closing(engine(EventRetention(max_revisions=30))) as store:
        written: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        lock = threading.Lock()

        def worker(n: int) -> None:
            org = "abc"[n % 3]
            for i in range(40):

                def write(txn: Any, fail: bool = (i + n) % 5 == 0, size: int = 1 + i % 7) -> int:
                    revision = txn.append_event(org.encode() * size, org)
                    if fail:
                        raise ValueError("rolled back")
                    return int(revision)

                try:
                    revision = store.transact(write)
                except ValueError:
                    continue
                with lock:
                    written[org].append(revision)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        kept = {revision for revision, _ in retained(store)}
        assert len(kept) == 30
        for org, revisions in written.items():
            revisions.sort()
            mine = [r for r in revisions if r in kept]
            assert mine == revisions[len(revisions) - len(mine) :], org  # its newest, none missing
            pruned = revisions[: len(revisions) - len(mine)]
            assert _compacted(store, [org]) == (pruned[-1] if pruned else 0), org
        if isinstance(store, LmdbStore):  # the stored shares are what the log holds
            with store.read() as txn:
                for org, revisions in written.items():
                    share = txn.get(keys.event_part_key(org.encode()))
                    assert share is not None
                    assert int.from_bytes(share[:8], "big") == len([r for r in revisions if r in kept]), org


def test_a_partition_the_layouts_cannot_keep_apart_is_refused(engine: OpenStore) -> None:
    """A NUL ended a name in LMDB's per-org index (two orgs' revisions could be read as one's),
    PostgreSQL answered INTERNAL for it, and a long name passed LMDB's key room."""
    with contextlib.closing(engine()) as store:
        for bad in ("a\x00b", "ä" * 200):
            with pytest.raises(InvalidArgument, match="partition"):
                _append(store, bad, b"x")
        assert retained(store) == []
        assert _append(store, "ä" * 60, b"x") == 1
