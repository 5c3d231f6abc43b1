"""LMDB's reader table holds a fixed number of read transactions at once.

py-lmdb keeps an ended read's slot until its Transaction object is freed, and a reader stayed
alive as long as whatever held it (a call's context, until its answer was sent): 2,500 gets in
flight on one connection ran out of slots and were answered INTERNAL ("a bug"). An ended reader
now lets go of its transaction; a read past the table is a moment's shortage, UNAVAILABLE."""

from __future__ import annotations

from pathlib import Path

import pytest

from stigmer_core import errors
from stigmer_core.store.lmdb_store import MAX_READERS, LmdbStore


def test_ended_readers_still_referenced_hold_no_slot(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    try:
        ended = []
        for _ in range(MAX_READERS + 10):
            with store.read() as txn:
                txn.get(b"k/none")
            ended.append(txn)  # kept, as a call's context keeps its reader until its answer is sent
        with pytest.raises(errors.PluginFault, match="used after it ended"):
            ended[0].get(b"k/none")
    finally:
        store.close()


def test_a_read_past_the_reader_table_is_unavailable_and_the_next_one_reads(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, durable=False)
    try:
        store.transact(lambda txn: txn.put(b"k/one", b"1"))
        held = []
        with pytest.raises(errors.Unavailable, match="reads open at once, the most it can") as refused:
            for _ in range(MAX_READERS + 1):
                held.append(store.read())
        assert "retry" in str(refused.value)
        assert MAX_READERS - 2 <= len(held) <= MAX_READERS
        for reader in held:
            reader.__exit__(None, None, None)
        with store.read() as txn:
            assert txn.get(b"k/one") == b"1"
    finally:
        store.close()
