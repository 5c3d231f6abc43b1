"""A team server's daemons share its database; a key rotation must hold it alone
(``store.postgres_use``): refused while a daemon holds it, naming the holders, and a daemon
starting during one waits. Real PostgreSQL: the session's throwaway server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stigmer_core.application import Application
from stigmer_core.errors import DatabaseUnreachable, StoreInUse
from stigmer_core.store.postgres_settings import PostgresSettings
from stigmer_core.store.postgres_use import use_key
from stigmer_core.testing import postgres

DEADLINE = 20.0


def _holders(url: str) -> list[tuple[int, str]]:
    """(pid, mode) of the sessions holding ``url``'s schema's use lock."""
    settings = PostgresSettings.from_url(url)
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, mode FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND classid::bigint = %s AND objid::bigint = %s ORDER BY pid",
            use_key(settings.schema),
        ).fetchall()
    return [(int(pid), str(mode)) for pid, mode in rows]


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(PostgresSettings.from_url(url).conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def other_schema_url(stigmer_postgres_url: str) -> Iterator[str]:
    url = postgres.fresh_schema_url(stigmer_postgres_url)
    yield url
    postgres.drop_schema(url)


def test_a_rotation_is_refused_while_a_daemon_holds_the_database(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    url = stigmer_postgres_store_url
    daemon = Application.open(tmp_path / "daemon", durable=False, store=url)
    try:
        [(pid, mode)] = _holders(url)
        assert mode == "ShareLock"
        with pytest.raises(StoreInUse, match=rf"is in use: one daemon holds it \(pid {pid} on the database server"):
            Application.open(tmp_path / "rotation", durable=False, store=url, sole=True)
        assert _holders(url) == [(pid, "ShareLock")], "the refused rotation left nothing held"
        with Application.open(tmp_path / "command", durable=False, store=url, transient=True):
            assert _holders(url) == [(pid, "ShareLock")], "a command holds no share: it never blocks a rotation"
    finally:
        daemon.close()
    # at once: the daemon lets go before closing its connection, whose backend would let go only as
    # it exits, after the close returned (a rotation run as the daemon stopped was refused, seen once)
    assert _holders(url) == []
    with Application.open(tmp_path / "rotation", durable=False, store=url, sole=True):
        [(_, mode)] = _holders(url)
        assert mode == "ExclusiveLock"


def test_a_daemon_starting_during_a_rotation_waits_for_it(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    url = stigmer_postgres_store_url
    with Application.open(tmp_path / "rotation", durable=False, store=url, sole=True):
        # DatabaseUnreachable is what `stigmer serve --store-wait` waits out
        with pytest.raises(DatabaseUnreachable, match="held alone by a key rotation"):
            Application.open(tmp_path / "daemon", durable=False, store=url)
        # a command still runs beside it (what it seals is checked against the key in its own write)
        with Application.open(tmp_path / "command", durable=False, store=url, transient=True) as command:
            assert [mode for _, mode in _holders(url)] == ["ExclusiveLock"]
            with command.store.read() as txn:
                assert txn.get(b"m/no-such-key") is None
    with Application.open(tmp_path / "daemon", durable=False, store=url):
        assert [mode for _, mode in _holders(url)] == ["ShareLock"]


def test_a_daemon_takes_its_share_again_when_its_connection_drops(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    url = stigmer_postgres_store_url
    with Application.open(tmp_path / "daemon", durable=False, store=url):
        [(pid, _)] = _holders(url)
        _terminate(url, pid)
        deadline = time.monotonic() + DEADLINE
        while (held := _holders(url)) in ([], [(pid, "ShareLock")]) and time.monotonic() < deadline:
            time.sleep(0.05)
        [(again, mode)] = held
        assert again != pid and mode == "ShareLock"
        with pytest.raises(StoreInUse, match=f"pid {again} "):
            Application.open(tmp_path / "rotation", durable=False, store=url, sole=True)


def test_each_schema_has_a_lock_of_its_own(
    tmp_path: Path, stigmer_postgres_store_url: str, other_schema_url: str
) -> None:
    with (
        Application.open(tmp_path / "rotation", durable=False, store=stigmer_postgres_store_url, sole=True),
        Application.open(tmp_path / "daemon", durable=False, store=other_schema_url),
    ):
        assert [mode for _, mode in _holders(other_schema_url)] == ["ShareLock"]
