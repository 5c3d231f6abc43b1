"""Every daemon on one PostgreSQL schema prunes the event log by the same bounds: the schema's.

Daemons started with different settings each pruned the one log by their
own, so the smallest bound won, whichever daemon happened to commit. The
schema now records the bounds (``meta.retention_*``): a daemon given bounds
records them and says so when it changes them, one given none follows what
is recorded, and every commit prunes by what it reads with the revision lock.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from stigmer_core import Application
from stigmer_core.store import Store
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.retention import EventRetention


def _write(store: Store, count: int) -> None:
    for _ in range(count):
        store.transact(lambda txn: txn.append_event(b"e", "org"))


def _held(store: Store) -> int:
    with store.read() as txn:
        return len({revision for revision, _ in txn.events(0)})


def test_daemons_on_one_schema_prune_by_the_bounds_the_last_one_set(
    stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = stigmer_postgres_store_url
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(
            contextlib.closing(PostgresStore(url, durable=False, retention=EventRetention(max_revisions=5)))
        )
        follower = stack.enter_context(contextlib.closing(PostgresStore(url, durable=False)))
        assert follower.retention.max_revisions == 5  # given none: the schema's
        _write(follower, 12)
        assert _held(follower) == 5
        with caplog.at_level(logging.WARNING, logger="stigmer_core.store.postgres_store"):
            last = stack.enter_context(
                contextlib.closing(PostgresStore(url, durable=False, retention=EventRetention(max_revisions=3)))
            )
        assert any(
            "changes from 5 revisions" in r.getMessage() and "to 3 revisions" in r.getMessage() for r in caplog.records
        )
        _write(first, 4)  # the first daemon prunes by the bounds the last one set, not its own
        assert _held(last) == 3
        assert first.retention.max_revisions == 3
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stigmer_core.store.postgres_store"):
            again = PostgresStore(url, durable=False, retention=EventRetention(max_revisions=3))
            again.close()
        assert not caplog.records  # the same bounds again: nothing changes, nothing said


def test_a_daemon_started_without_settings_follows_the_schema_and_one_with_them_records_them(
    stigmer_postgres_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "STIGMER_EVENT_RETENTION_REVISIONS",
        "STIGMER_EVENT_RETENTION_BYTES",
        "STIGMER_EVENT_RETENTION_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    with Application.open(tmp_path / "a", durable=False, store=stigmer_postgres_store_url) as app:
        assert app.store.retention == EventRetention()  # nothing recorded: the defaults
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_BYTES", "9000")
    with Application.open(tmp_path / "b", durable=False, store=stigmer_postgres_store_url) as app:
        assert app.store.retention == EventRetention(max_bytes=9000)
    monkeypatch.delenv("STIGMER_EVENT_RETENTION_BYTES")
    with Application.open(tmp_path / "c", durable=False, store=stigmer_postgres_store_url) as app:
        assert isinstance(app.store, PostgresStore)
        assert app.store.retention == EventRetention(max_bytes=9000)  # the schema's, not the defaults
