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

import psycopg
import pytest

from stigmer_core import Application
from stigmer_core.store import Store
from stigmer_core.store.postgres_store import PostgresSettings, PostgresStore, redact_url
from stigmer_core.store.retention import ENV_VARIABLES, EventRetention


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


def test_a_bound_set_on_a_schema_that_recorded_none_is_logged_as_a_change_from_the_defaults(
    stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema's log was pruned by the defaults until then: the first daemon setting a bound
    changed it without the line that says so."""
    url = stigmer_postgres_store_url
    with (
        caplog.at_level(logging.WARNING, logger="stigmer_core.store.postgres_store"),
        contextlib.closing(PostgresStore(url, durable=False, retention=EventRetention(max_revisions=40))),
    ):
        pass
    changes = [r.getMessage() for r in caplog.records if "changes from" in r.getMessage()]
    default = EventRetention()
    assert len(changes) == 1, caplog.records
    assert f"from {default.max_revisions} revisions" in changes[0] and "(the defaults" in changes[0], changes
    assert "to 40 revisions" in changes[0], changes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stigmer_core.store.postgres_store"):
        with contextlib.closing(PostgresStore(url, durable=False, retention=EventRetention())):
            pass  # back to the defaults: a change from what is recorded
        with contextlib.closing(PostgresStore(url, durable=False, retention=EventRetention())):
            pass  # the same again: nothing said
    changes = [r.getMessage() for r in caplog.records if "changes from" in r.getMessage()]
    assert len(changes) == 1 and "from 40 revisions" in changes[0] and "(the defaults" not in changes[0], changes


def test_a_daemons_start_line_names_its_schema(stigmer_postgres_store_url: str, tmp_path: Path) -> None:
    """Deployments sharing one database differ only by their schema, which the line left out."""
    from tests.test_daemon import Daemon

    schema = PostgresSettings.from_url(stigmer_postgres_store_url).schema
    daemon = Daemon(tmp_path / "daemon", "--store", stigmer_postgres_store_url)
    code, out = daemon.stop()
    assert code == 0
    started = next(line for line in out.splitlines() if "listening on" in line)
    assert f"?schema={schema};" in started and "(data: postgresql://" in started, started
    bare = stigmer_postgres_store_url.split("?", 1)[0]
    assert redact_url(bare).endswith("?schema=stigmer"), "the default schema is named too"


def test_the_daemon_records_its_settings_and_other_openers_only_follow_them(
    stigmer_postgres_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stigmer serve` records its environment's retention for the schema; a command opening the
    store in its own process (`stigmer doctor`, a CLI get) follows what is recorded whatever its
    shell says: `STIGMER_EVENT_RETENTION_REVISIONS=7 stigmer doctor` pruned every daemon's log to 7."""
    from tests.test_daemon import Daemon

    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_REVISIONS", "7")
    with Application.open(tmp_path / "cli", durable=False, store=stigmer_postgres_store_url) as app:
        assert app.store.retention == EventRetention()  # nothing recorded: the defaults, not its shell's
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_REVISIONS", "9000")
    daemon = Daemon(tmp_path / "daemon", "--store", stigmer_postgres_store_url)
    try:
        monkeypatch.setenv("STIGMER_EVENT_RETENTION_REVISIONS", "7")
        with Application.open(tmp_path / "doctor", durable=False, store=stigmer_postgres_store_url) as app:
            assert app.store.retention == EventRetention(max_revisions=9000)  # the daemon's
    finally:
        assert daemon.stop()[0] == 0


def test_bounds_past_what_the_engines_can_reckon_with_are_refused(stigmer_postgres_store_url: str) -> None:
    """A century-long age bound overflowed every commit's clock arithmetic (INTERNAL for every
    daemon of the schema once one had recorded it)."""
    with pytest.raises(ValueError, match="max_age_seconds"):
        EventRetention(max_age_seconds=100_000_000_000)
    with contextlib.closing(PostgresStore(stigmer_postgres_store_url, durable=False)) as store:
        with psycopg.connect(store.settings.conninfo, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{store.schema}".meta SET retention_revisions = 5, retention_bytes = 1000,'
                " retention_seconds = 100000000000".encode()
            )
        _write(store, 3)  # recorded by hand past the bound: pruned by its own, and said
        assert _held(store) == 3


def test_a_daemon_records_only_the_bounds_its_environment_sets(
    stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon started with one `STIGMER_EVENT_RETENTION_*` set recorded the other two at their
    defaults, so setting the byte bound on one daemon undid another's week-long age bound."""
    url = stigmer_postgres_store_url
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    chosen = EventRetention(max_revisions=50, max_bytes=10_000, max_age_seconds=3600)
    with contextlib.closing(PostgresStore(url, durable=False, retention=chosen)):
        pass
    monkeypatch.setenv("STIGMER_EVENT_RETENTION_BYTES", "20000")
    only_bytes = EventRetention.from_env_if_set()
    assert only_bytes is not None and only_bytes.chosen == {"max_bytes"}
    with contextlib.closing(PostgresStore(url, durable=False, retention=only_bytes)) as store:
        assert store.retention == EventRetention(max_revisions=50, max_bytes=20_000, max_age_seconds=3600)
    with contextlib.closing(PostgresStore(url, durable=False)) as follower:
        assert follower.retention == EventRetention(max_revisions=50, max_bytes=20_000, max_age_seconds=3600)
    # the older argument for the revision count alone records only that one
    with contextlib.closing(PostgresStore(url, durable=False, event_retention=8)) as store:
        assert store.retention == EventRetention(max_revisions=8, max_bytes=20_000, max_age_seconds=3600)
