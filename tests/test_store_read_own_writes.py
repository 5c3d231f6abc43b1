"""A write transaction reads what it wrote, on every engine.

The PostgreSQL engine holds a transaction's puts and event appends back and
sends them in one statement (at the end of the caller's function, or before a
scan or a read of the log), and answers a get from what it put or read
already: these hold it to what LMDB, which writes each put at once, answers.
"""

from __future__ import annotations

import pytest

from stigmer_core.store import WriteTxn
from tests import engine_support
from tests.engine_support import OpenStore

engine = engine_support.engine  # the fixture every test here takes


def test_gets_scans_and_deletes_see_the_puts_before_them(engine: OpenStore) -> None:
    store = engine()
    store.transact(lambda txn: (txn.put(b"k/stored", b"old"), txn.put(b"k/gone", b"x")))

    def write(txn: WriteTxn) -> list[object]:
        seen: list[object] = []
        txn.put(b"k/new", b"1")
        txn.put(b"k/new", b"2")  # the later put of a key wins
        txn.put(b"k/stored", b"changed")
        seen.append(txn.get(b"k/new"))
        seen.append(txn.get(b"k/stored"))
        seen.append(txn.get(b"k/absent"))
        seen.append(txn.delete(b"k/new"))  # put here, never stored before: still there to delete
        seen.append(txn.get(b"k/new"))
        seen.append(txn.delete(b"k/new"))
        seen.append(txn.delete(b"k/gone"))
        seen.append(txn.delete(b"k/absent"))  # read as absent above
        seen.append(txn.get(b"k/gone"))
        txn.put(b"k/late", b"3")
        seen.append(list(txn.scan(b"k/")))
        txn.put(b"k/after-scan", b"4")
        txn.append_event(b"first")
        txn.append_event(b"second")
        seen.append([payload for _, payload in txn.events(0)])
        return seen

    assert store.transact(write) == [
        b"2",
        b"changed",
        None,
        True,
        None,
        False,
        True,
        False,
        None,
        [(b"k/late", b"3"), (b"k/stored", b"changed")],
        [b"first", b"second"],
    ]
    with store.read() as txn:
        assert list(txn.scan(b"k/")) == [(b"k/after-scan", b"4"), (b"k/late", b"3"), (b"k/stored", b"changed")]
        assert [payload for _, payload in txn.events(0)] == [b"first", b"second"]


def test_a_function_that_raises_after_its_puts_leaves_none_of_them(engine: OpenStore) -> None:
    store = engine()

    def write(txn: WriteTxn) -> None:
        txn.put(b"k/a", b"1")
        assert txn.get(b"k/a") == b"1"
        raise ValueError("changed its mind")

    with pytest.raises(ValueError, match="changed its mind"):
        store.transact(write)
    with store.read() as txn:
        assert txn.get(b"k/a") is None


def test_get_many_answers_as_gets_would_in_order_with_repeats(engine: OpenStore) -> None:
    store = engine()
    store.transact(lambda txn: (txn.put(b"k/a", b"stored a"), txn.put(b"k/b", b"stored b"), txn.put(b"k/c", b"c")))

    def write(txn: WriteTxn) -> list[object]:
        txn.put(b"k/b", b"put b")  # held back, on PostgreSQL: answered from the put
        txn.delete(b"k/c")
        asked = [b"k/absent", b"k/a", b"k/b", b"k/c", b"k/a", b"k/later"]
        first = txn.get_many(asked)
        txn.put(b"k/later", b"now")
        return [first, txn.get_many(asked), [txn.get(key) for key in asked], txn.get_many([])]

    first, again, one_by_one, none = store.transact(write)
    assert first == [None, b"stored a", b"put b", None, b"stored a", None]
    assert again == one_by_one == [None, b"stored a", b"put b", None, b"stored a", b"now"]
    assert none == []
    with store.read() as txn:
        assert txn.get_many([b"k/b", b"k/c", b"k/later", b"k/b"]) == [b"put b", None, b"now", b"put b"]


def test_scan_many_and_sizes_under_answer_as_scans_would_in_the_prefixes_order(engine: OpenStore) -> None:
    store = engine()
    stored = {b"r/a/1": b"x", b"r/a/2": b"yy", b"r/b/1": b"", b"r/c/1": b"zzz", b"r/ab/1": b"not under r/a/"}
    store.transact(lambda txn: [txn.put(key, value) for key, value in stored.items()])
    prefixes = [b"r/c/", b"r/a/", b"r/none/"]

    def write(txn: WriteTxn) -> list[object]:
        txn.put(b"r/a/3", b"held")  # held back on PostgreSQL: sent before the read
        txn.discard(b"r/c/1")
        return [txn.scan_many(prefixes), txn.scan_many(prefixes, first=1), txn.sizes_under(prefixes)]

    many, first, sizes = store.transact(write)
    assert many == [(b"r/a/1", b"x"), (b"r/a/2", b"yy"), (b"r/a/3", b"held")]
    assert first == [(b"r/a/1", b"x")]
    assert sizes == [(b"r/a/1", 1), (b"r/a/2", 2), (b"r/a/3", 4)]
    with store.read() as txn:
        assert txn.scan_many([b"r/c/", b"r/b/"]) == [(b"r/b/1", b"")]
        assert txn.scan_many([b"r/b/", b"r/a/"], first=2) == [(b"r/b/1", b""), (b"r/a/1", b"x"), (b"r/a/2", b"yy")]
        assert txn.sizes_under([]) == txn.scan_many([]) == []
        assert txn.scan_many([b"r/c/", b"r/b/"]) == [entry for p in (b"r/c/", b"r/b/") for entry in txn.scan(p)]
