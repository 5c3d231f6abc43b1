"""The store's listener thread follows the other daemons' commits; it must outlive whatever
stops it reconnecting. It caught only the database's errors: with no file descriptor left to
connect with (an ``OSError``, EMFILE) the thread ended for good, and this daemon's watches
missed every other daemon's write while its health stayed SERVING. Real PostgreSQL, and a
process that really has no descriptor left but the one its listener's connection frees."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import psycopg
import pytest

from stigmer_core import errors
from stigmer_core.store import WriteTxn
from stigmer_core.store.postgres_settings import PostgresSettings
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.protocol import StoreUse

WAIT = 30.0
"""How long a test waits for what must come; never a measure of speed."""
WATCHED = "stigmer-listener-watched"


def _write(txn: WriteTxn) -> int:
    """A write with an event, as every object's write has: it moves the revision watches follow."""
    txn.put(b"k/written", b"1")
    return txn.append_event(b"ev")


def _every_descriptor_taken() -> list[int]:
    """Open /dev/null until the process's open-files limit refuses another."""
    taken = []
    with contextlib.suppress(OSError):
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    return taken


def test_a_listener_that_cannot_connect_for_want_of_descriptors_tries_again(
    stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    conninfo = PostgresSettings.from_url(stigmer_postgres_store_url).conninfo
    daemon = StoreUse.SHARE  # as a daemon holds it
    with (
        PostgresStore(f"{stigmer_postgres_store_url}&application_name={WATCHED}", durable=False, use=daemon) as watched,
        PostgresStore(stigmer_postgres_store_url, durable=False, use=daemon) as other,
        psycopg.connect(conninfo, autocommit=True) as admin,
    ):
        other.transact(_write)
        caplog.set_level(logging.WARNING)
        # the watched store's listener is the connection of its name holding the schema's use lock
        [listener] = admin.execute(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
            " WHERE a.application_name = %s AND l.locktype = 'advisory' AND l.granted",
            (WATCHED,),
        ).fetchall()
        taken = _every_descriptor_taken()
        try:  # its connection ended: the socket it frees is the one descriptor its reconnect finds
            admin.execute(b"SELECT pg_terminate_backend(%s)", (listener[0],))
            deadline = time.monotonic() + WAIT
            while "store listener failed (OSError" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for fd in taken:
                os.close(fd)
        assert "store listener failed (OSError" in caplog.text, caplog.text
        alive = [t for t in threading.enumerate() if t.name.startswith("stigmer-listen")]
        assert len(alive) == 2, alive
        before = watched.wait_for_revision(0, 0)
        deadline = time.monotonic() + WAIT
        while True:  # another daemon's write, once its store serves again: only the listener tells of it
            try:
                other.transact(_write)
                break
            except errors.Unavailable:
                assert time.monotonic() < deadline, "the other store never served again"
                time.sleep(0.1)
        seen = before
        deadline = time.monotonic() + WAIT
        while seen <= before and time.monotonic() < deadline:
            seen = watched.wait_for_revision(before, 1.0)
        assert seen > before, "the listener never came back: the other daemon's write was not seen"
