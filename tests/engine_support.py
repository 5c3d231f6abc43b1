"""One store factory for tests that hold every engine to the same behaviour.

``engine(retention=None)`` opens the test's store: LMDB in the test's
directory, PostgreSQL in a schema of the test's own, opened again at the same
place on every call (so a test can close it and open it once more).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from stigmer_core.store import Store, keys
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.retention import EventRetention
from stigmer_core.testing.postgres import selected_engines

OpenStore = Callable[..., Store]
"""``engine(retention=None)``: the test's store, opened again at the same place on every call."""


@pytest.fixture(params=selected_engines())
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    opened: list[Store] = []
    if request.param == "lmdb":

        def make(retention: EventRetention | None = None) -> Store:
            return LmdbStore(tmp_path / "store", durable=False, retention=retention)
    else:
        url: str = request.getfixturevalue("stigmer_postgres_store_url")

        def make(retention: EventRetention | None = None) -> Store:
            return PostgresStore(url, durable=False, retention=retention)

    def tracked(retention: EventRetention | None = None) -> Store:
        store = make(retention)
        opened.append(store)
        return store

    yield tracked
    for store in opened:  # closing twice is harmless: a test's own close came first
        with contextlib.suppress(Exception):
            store.close()


def retained(store: Store) -> list[tuple[int, bytes]]:
    with store.read() as txn:
        return list(txn.events(0))


def counted_bytes(store: Store) -> int:
    """The engine's running byte total of the log (what the byte bound is checked against)."""
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.settings.conninfo) as conn:
            row = conn.execute(f'SELECT log_bytes FROM "{store.schema}".meta'.encode()).fetchone()
        return int(row[0]) if row else -1
    with store.read() as txn:
        raw = txn.get(keys.EVENT_BYTES)
    return int.from_bytes(raw or b"", "big")
