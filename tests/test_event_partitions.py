"""A reader of some orgs' events reads them through the log's per-org index, on every engine.

Every revision is filed under one partition of the log: its org's, or the
shared one when a transaction's events name two orgs (or none). A watch
resumed from far back used to read every org's events since its revision and
drop the others' in the daemon: one org catching up past another org's
129,000 revisions took 4.4 s against 0.02 s. ``events(after, partitions)``
reads only the revisions filed under those partitions and the shared one,
whole, so positions within a revision are those of the whole log.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from stigmer_core import InvalidArgument
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.pipeline.events import Cursor, EventHub, StreamSettings
from stigmer_core.store import Store
from tests import engine_support
from tests.engine_support import OpenStore

engine = engine_support.engine  # the fixture every test here takes


def _write(store: Store, *events: tuple[str, bytes]) -> int:
    """One transaction appending ``events`` (org, payload); its revision."""

    def write(txn: Any) -> int:
        return int(max(txn.append_event(payload, org) for org, payload in events))

    return store.transact(write)


def _read(store: Store, after: int, partitions: Sequence[str] | None) -> list[tuple[int, bytes]]:
    with store.read() as txn:
        return list(txn.events(after, partitions))


def test_a_reader_of_some_orgs_gets_their_revisions_and_the_shared_ones_whole(engine: OpenStore) -> None:
    with contextlib.closing(engine()) as store:
        a1 = _write(store, ("a", b"a1.0"), ("a", b"a1.1"))
        b1 = _write(store, ("b", b"b1"))
        shared = _write(store, ("a", b"s.0"), ("b", b"s.1"), ("a", b"s.2"))  # two orgs: the shared partition
        none = _write(store, ("", b"n"))  # no org: the shared partition too
        c1 = _write(store, ("c", b"c1"))
        a2 = _write(store, ("a", b"a2"))
        whole = _read(store, 0, None)
        assert [payload for _, payload in whole] == [b"a1.0", b"a1.1", b"b1", b"s.0", b"s.1", b"s.2", b"n", b"c1", b"a2"]
        of_a = [(a1, b"a1.0"), (a1, b"a1.1"), (shared, b"s.0"), (shared, b"s.1"), (shared, b"s.2"), (none, b"n"), (a2, b"a2")]
        assert _read(store, 0, ["a"]) == of_a
        assert _read(store, 0, ("a", "")) == of_a  # the shared partition named too: still once
        assert _read(store, a1, ["a"]) == of_a[2:]
        assert _read(store, 0, ["b", "c"]) == [
            (b1, b"b1"),
            *[event for event in of_a if event[0] in (shared, none)],
            (c1, b"c1"),
        ]
        assert _read(store, 0, []) == [event for event in of_a if event[0] in (shared, none)]
        assert _read(store, 0, ["never-wrote"]) == _read(store, 0, [])
        assert _read(store, a2, ["a"]) == []


def test_a_long_history_of_one_org_pages_in_order_past_other_orgs(engine: OpenStore) -> None:
    """More revisions than a round trip's page (PostgreSQL's ``scan_page``, 256), interleaved."""
    with contextlib.closing(engine()) as store:
        mine: list[tuple[int, bytes]] = []
        for n in range(300):
            _write(store, ("loud", b"l%d" % n))
            if n % 2:
                payload = b"q%d" % n
                mine.append((_write(store, ("quiet", payload), ("quiet", payload + b"+")), payload))
        got = _read(store, 0, ["quiet"])
        assert got[::2] == mine
        assert [payload for _, payload in got[1::2]] == [payload + b"+" for _, payload in mine]
        middle = mine[75][0]
        assert _read(store, middle, ["quiet"])[::2] == mine[76:]


def test_a_watch_resumed_from_far_back_reads_past_other_orgs_events_in_one_page(engine: OpenStore) -> None:
    """A page stops after examining 16 pages' worth of events: when every org's were examined,
    another org's 600 revisions gave a quiet org's watch empty pages before its own event."""
    with contextlib.closing(engine()) as store:
        event = event_pb2.ResourceEvent(kind="K", object=b"x").SerializeToString()
        for _ in range(600):
            _write(store, ("loud", event))
        quiet = _write(store, ("quiet", event))
        hub = EventHub(store, StreamSettings(page_events=4))
        try:
            page = hub.read("K", Cursor.after(0), ["quiet"])
            assert page is not None
            found, cursor = page
            assert [index for _, index in found] == [0]
            assert cursor == Cursor.after(quiet)
        finally:
            hub.close()


def test_a_forgotten_partition_leaves_the_log_and_says_it_was_pruned(engine: OpenStore) -> None:
    """An org removed from a server: its history must not be read by whoever gets the name next."""
    with contextlib.closing(engine()) as store:
        for n in range(3):
            _write(store, ("gone", b"g%d" % n), ("gone", b"g%d+" % n))
        kept = _write(store, ("kept", b"k"))
        shared = _write(store, ("gone", b"s.0"), ("kept", b"s.1"))
        later = _write(store, ("gone", b"g-last"))
        assert store.transact(lambda txn: txn.forget_partition("gone")) == 4
        assert _read(store, 0, None) == [(kept, b"k"), (shared, b"s.0"), (shared, b"s.1")]  # the shared one stays
        with store.read() as txn:
            assert txn.compacted_through(["gone"]) == later  # a resume from before it is told
            assert txn.compacted_through(["kept"]) == 0
            assert txn.compacted_through(None) == later
        assert engine_support.counted_bytes(store) == len(b"k") + len(b"s.0") + len(b"s.1")
        assert store.transact(lambda txn: txn.forget_partition("gone")) == 0  # nothing left of it
        again = _write(store, ("gone", b"new"))  # the name taken again: a history of its own
        assert _read(store, later, ["gone"]) == [(again, b"new")]
        assert _read(store, 0, ["gone"])[0] == (shared, b"s.0")  # none of the forgotten ones
    with contextlib.closing(engine()) as store:  # the counts were stored, not only kept in memory
        assert engine_support.counted_bytes(store) == len(b"k") + len(b"s.0") + len(b"s.1") + len(b"new")
        with pytest.raises(InvalidArgument, match="shared partition"):
            store.transact(lambda txn: txn.forget_partition(""))


def test_forgetting_an_org_covers_its_events_left_in_the_shared_partition(engine: OpenStore) -> None:
    """An org's events from before the log had partitions are filed under the shared one, and stay
    when it is forgotten: its watermark was its newest own revision, none for an org with no
    revision of its own, and a watch of the name from revision 0 read them."""
    with contextlib.closing(engine()) as store:
        _write(store, ("", b"an event of gone's, from before partitions"))
        now = _write(store, ("kept", b"k"))
        assert store.transact(lambda txn: txn.forget_partition("gone")) == 0
        with store.read() as txn:
            assert txn.compacted_through(["gone"]) == now  # a watch of it from before now is told
            assert txn.compacted_through(["kept"]) == 0
            assert txn.compacted_through(None) == 0  # a watch of every org reads a whole log, as before
    with contextlib.closing(engine()) as store, store.read() as txn:  # stored, not only kept in memory
        assert txn.compacted_through(["gone"]) == now


def test_the_dispatcher_wakes_only_the_streams_an_event_may_be_for(engine: OpenStore) -> None:
    """Each stream of a kind was woken by every event of it: about 80 µs of a daemon's CPU for each
    stream an event was not for, so every org's runners were woken by every other org's writes."""
    with contextlib.closing(engine()) as store:
        hub = EventHub(store)
        hub._thread = threading.current_thread()  # as if dispatching: steps run here, one by one
        with store.read() as txn:
            hub._head = hub._floor = txn.revision
        try:
            of_a, of_b, anyone = hub.subscribe("K", orgs=["a"]), hub.subscribe("K", orgs=["b", "c"]), hub.subscribe("K")
            other_kind = hub.subscribe("L")
            subs = (of_a, of_b, anyone, other_kind)

            def woken_by(*events: event_pb2.ResourceEvent) -> list[bool]:
                for sub in subs:
                    sub.wake.clear()
                store.transact(lambda txn: [txn.append_event(e.SerializeToString(), e.org) for e in events])
                hub._step()
                return [sub.wake.is_set() for sub in subs]

            assert woken_by(event_pb2.ResourceEvent(kind="K", org="a")) == [True, False, True, False]
            assert woken_by(event_pb2.ResourceEvent(kind="K", org="c")) == [False, True, True, False]
            assert woken_by(event_pb2.ResourceEvent(kind="K", org="z")) == [False, False, True, False]
            assert woken_by(event_pb2.ResourceEvent(kind="L", org="a")) == [False, False, False, True]
            # written before events carried their org: it may be for anyone
            assert woken_by(event_pb2.ResourceEvent(kind="K")) == [True, True, True, False]
            assert woken_by(event_pb2.ResourceEvent(kind="K", org="a"), event_pb2.ResourceEvent(kind="K", org="b")) == [
                True, True, True, False
            ]
        finally:
            hub._thread = None
            hub.close()
