"""PostgreSQL's read-ahead: keys nearly every write reads (the kinds' release records) are
fetched by the statement that begins the write, so gets of them cost no round trip with the
revision lock held. What such a get answers must be what a get sent to the database would:
another daemon's commit, an earlier caller of the same batch, a caller rolled back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from stigmer_core import errors
from stigmer_core.store import WriteTxn
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.protocol import ReadsAhead

AHEAD = (b"m/kinds/alpha", b"m/kinds/beta")


@pytest.fixture
def url(stigmer_postgres_store_url: str) -> str:
    return stigmer_postgres_store_url


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    with PostgresStore(url, durable=False) as opened:
        opened.read_ahead(AHEAD)
        yield opened


def _get(key: bytes) -> Any:
    return lambda txn: txn.get(key)


def test_gets_of_keys_read_ahead_send_no_statement(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(store, ReadsAhead)
    store.transact(lambda txn: txn.put(AHEAD[0], b"one"))
    sent: list[bytes] = []
    execute = psycopg.Cursor.execute  # every statement goes through one (Connection.execute makes one)

    def counted(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(bytes(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    assert store.transact(lambda txn: (txn.get(AHEAD[0]), txn.get(AHEAD[1]))) == (b"one", None)
    gets = [q for q in sent if q.startswith(b"SELECT value FROM")]
    assert gets == [], "both answered from what the write's first statement read"
    assert sum(AHEAD[0].hex().encode() in q for q in sent) == 1
    assert store.transact(_get(b"k/other")) is None
    assert any(q.startswith(b"SELECT value FROM") for q in sent), "a key not read ahead is still asked for"


def test_a_write_sees_another_daemons_commit_to_a_key_read_ahead(store: PostgresStore, url: str) -> None:
    store.transact(lambda txn: txn.put(AHEAD[0], b"mine"))
    assert store.transact(_get(AHEAD[0])) == b"mine"
    with PostgresStore(url, durable=False) as other:  # a second daemon on the schema, reading nothing ahead
        other.transact(lambda txn: (txn.put(AHEAD[0], b"theirs"), txn.put(AHEAD[1], b"new")))
    assert store.transact(lambda txn: (txn.get(AHEAD[0]), txn.get(AHEAD[1]))) == (b"theirs", b"new")
    with PostgresStore(url, durable=False) as other:
        other.transact(lambda txn: txn.delete(AHEAD[1]))
    assert store.transact(_get(AHEAD[1])) is None


def test_callers_of_one_batch_see_what_the_earlier_ones_wrote_and_not_what_was_rolled_back(
    store: PostgresStore,
) -> None:
    store.transact(lambda txn: (txn.put(AHEAD[0], b"before"), txn.put(AHEAD[1], b"before")))
    gate, started = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def blocker(txn: WriteTxn) -> None:
        started.set()  # holds the leader role so the others queue up into one batch
        gate.wait(timeout=10)
        txn.put(b"k/blocker", b"")

    def writes(txn: WriteTxn) -> None:
        txn.put(AHEAD[0], b"written")
        txn.delete(AHEAD[1])

    def fails(txn: WriteTxn) -> None:
        txn.put(AHEAD[0], b"rolled back")
        raise errors.Conflict("refused")

    def reads(txn: WriteTxn) -> None:
        seen["read"] = (txn.get(AHEAD[0]), txn.get(AHEAD[1]))

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(store.transact, blocker)
        assert started.wait(timeout=10)
        queued = []
        for fn in (writes, fails, reads):  # queued in this order: one batch runs them so
            queued.append(pool.submit(store.transact, fn))
            while store._writes.queued < len(queued):
                threading.Event().wait(0.01)
        commits = store.commits
        gate.set()
        first.result(timeout=10)
        queued[0].result(timeout=10)
        with pytest.raises(errors.Conflict):
            queued[1].result(timeout=10)
        queued[2].result(timeout=10)
    assert store.commits - commits == 2, "the blocker's batch, then one of the other three"
    assert seen["read"] == (b"written", None)
    assert store.transact(lambda txn: (txn.get(AHEAD[0]), txn.get(AHEAD[1]))) == (b"written", None)


def test_reading_ahead_again_replaces_the_keys(store: PostgresStore) -> None:
    store.transact(lambda txn: (txn.put(AHEAD[0], b"a"), txn.put(b"m/kinds/gamma", b"g")))
    store.read_ahead([b"m/kinds/gamma"])
    assert store.transact(lambda txn: (txn.get(AHEAD[0]), txn.get(b"m/kinds/gamma"))) == (b"a", b"g")
    store.read_ahead([])
    assert store.transact(_get(b"m/kinds/gamma")) == b"g"
