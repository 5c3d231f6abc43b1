"""The baseline the store is measured against: JSON documents in one SQLite table.

This is the layout a resource API reaches for first: one ``resources`` table
with a ``kind`` column, each object stored as its JSON document, the org and
slug as indexed columns, SQLite in WAL mode. It implements the same Store
protocol as the LMDB engine, so the very same framework (pipelines,
indexes, events) runs on it and only the storage differs: object keys
(``o/...``) become rows holding JSON, slug keys (``s/...``) are answered from
the row's columns, and every other key (declared indexes, owners, versions)
sits in a plain key/value table beside it. It lives in bench/ only: it is a
yardstick, not an engine anyone should run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from stigmer_core.store.protocol import scan_each, sizes_each

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id TEXT NOT NULL, org TEXT NOT NULL, slug TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS resources_slug ON resources (kind, org, slug);
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (revision INTEGER NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (revision, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES (1, 0);
"""


def _split(key: bytes) -> tuple[str, list[str]]:
    """``o/agt/agent-01..`` -> ("o", ["agt", "agent-01.."]); slug keys keep org and slug apart."""
    area, _, rest = key.partition(b"/")
    return area.decode(), rest.decode().split("/")


class _Reader:
    def __init__(self, store: SqliteJsonStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.execute("COMMIT")

    @property
    def revision(self) -> int:
        row = self._conn.execute("SELECT revision FROM meta WHERE id = 1").fetchone()
        return int(row[0])

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def get(self, key: bytes) -> bytes | None:
        area, parts = _split(key)
        if area == "o" and len(parts) == 2:
            row = self._conn.execute("SELECT data FROM resources WHERE kind = ? AND id = ?", parts).fetchone()
            return None if row is None else self._store.to_bytes(parts[0], row[0])
        if area == "s" and len(parts) == 3:
            row = self._conn.execute(
                "SELECT id FROM resources WHERE kind = ? AND org = ? AND slug = ?", parts
            ).fetchone()
            return None if row is None else str(row[0]).encode()
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def scan_many(self, prefixes: Sequence[bytes], *, first: int = 0) -> list[tuple[bytes, bytes]]:
        return scan_each(self, prefixes, first)

    def sizes_under(self, prefixes: Sequence[bytes]) -> list[tuple[bytes, int]]:
        return sizes_each(self, prefixes)

    def scan(self, prefix: bytes, *, after: bytes = b"", first: int = 0) -> Iterator[tuple[bytes, bytes]]:
        area, parts = _split(prefix)
        if area == "o" and len(parts) == 2 and parts[1] == "":
            start = after[len(prefix) :].decode() if after else ""
            rows = self._conn.execute(
                "SELECT id, data FROM resources WHERE kind = ? AND id > ? ORDER BY id", (parts[0], start)
            )
            for object_id, data in rows:
                yield prefix + str(object_id).encode(), self._store.to_bytes(parts[0], data)
            return
        if area == "s" and len(parts) == 3 and parts[2] == "":
            start = after[len(prefix) :].decode() if after else ""
            rows = self._conn.execute(
                "SELECT slug, id FROM resources WHERE kind = ? AND org = ? AND slug > ? ORDER BY slug",
                (parts[0], parts[1], start),
            )
            for slug, object_id in rows:
                yield prefix + str(slug).encode(), str(object_id).encode()
            return
        rows = self._conn.execute(
            "SELECT key, value FROM kv WHERE key > ? AND key >= ? ORDER BY key", (after or prefix, prefix)
        )
        for key, value in rows:
            key = bytes(key)
            if not key.startswith(prefix):
                return
            if key == after:
                continue
            yield key, bytes(value)

    def events(self, after_revision: int, partitions: Collection[str] | None = None) -> Iterator[tuple[int, bytes]]:
        """The seeds' log filed no partitions: every reader reads everyone's events (streams
        send only their orgs' anyway), as the seeds did."""
        rows = self._conn.execute(
            "SELECT revision, payload FROM events WHERE revision > ? ORDER BY revision, seq", (after_revision,)
        )
        for revision, payload in rows:
            yield int(revision), bytes(payload)

    def oldest_event_revision(self) -> int:
        row = self._conn.execute("SELECT MIN(revision) FROM events").fetchone()
        return int(row[0] or 0)

    def compacted_through(self, partitions: Collection[str] | None = None) -> int:
        """The seeds' layout kept one log for everyone, pruned oldest first: one watermark for all."""
        oldest = self.oldest_event_revision()
        return oldest - 1 if oldest else self.revision


class _Writer(_Reader):
    def __init__(self, store: SqliteJsonStore, conn: sqlite3.Connection) -> None:
        super().__init__(store, conn)
        self._revision = 0
        self._seq = 0
        self.callbacks: list[Callable[[], None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        area, parts = _split(key)
        if area == "o" and len(parts) == 2:
            obj = self._store.parse(parts[0], value)
            meta: Any = obj.metadata  # type: ignore[attr-defined]
            self._conn.execute(
                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)",
                (parts[0], parts[1], meta.org, meta.slug, json_format.MessageToJson(obj, indent=None)),
            )
            return
        if area == "s" and len(parts) == 3:
            return  # the slug is a column of the object's row
        self._conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def delete(self, key: bytes) -> bool:
        area, parts = _split(key)
        if area == "o" and len(parts) == 2:
            return self._conn.execute("DELETE FROM resources WHERE kind = ? AND id = ?", parts).rowcount > 0
        if area == "s" and len(parts) == 3:
            return True  # goes with the object's row
        return self._conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount > 0

    def discard(self, key: bytes) -> None:
        self.delete(key)

    def write_revision(self) -> int:
        if not self._revision:
            self._revision = self.revision + 1
            self._conn.execute("UPDATE meta SET revision = ? WHERE id = 1", (self._revision,))
        return self._revision

    def append_event(self, payload: bytes, partition: str = "") -> int:
        revision = self.write_revision()
        if self._seq == 0:
            self._conn.execute("DELETE FROM events WHERE revision <= ?", (revision - self._store.retention,))
        self._conn.execute("INSERT INTO events VALUES (?, ?, ?)", (revision, self._seq, payload))
        self._seq += 1
        return revision

    def forget_partition(self, partition: str) -> int:
        """The seeds' log filed no partitions: nothing to forget by org."""
        return 0

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)


class SqliteJsonStore:
    """Store protocol over SQLite: objects as JSON documents, one writer at a time, no group commit."""

    def __init__(
        self, path: str | Path, messages: Mapping[str, type[Message]], *, durable: bool = True, retention: int = 100_000
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.file = self.path / "store.sqlite"
        self._messages = dict(messages)
        self._sync = "FULL" if durable else "OFF"
        self.retention = retention
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._revision_cond = threading.Condition()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self.commits = 0
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def parse(self, key_prefix: str, value: bytes) -> Message:
        return self._messages[key_prefix].FromString(value)

    def to_bytes(self, key_prefix: str, data: str) -> bytes:
        """What a read hands the framework: the stored JSON parsed back into protobuf."""
        return json_format.Parse(data, self._messages[key_prefix]()).SerializeToString()

    def read(self, *, restartable: bool = False) -> _Reader:
        conn = self._conn()
        conn.execute("BEGIN")
        return _Reader(self, conn)

    def transact(self, fn: Callable[[Any], T]) -> T:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            writer = _Writer(self, conn)
            try:
                result = fn(writer)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self.commits += 1
        with self._revision_cond:
            self._revision_cond.notify_all()
        for callback in writer.callbacks:
            callback()
        return result

    def wait_for_revision(self, after: int, timeout: float) -> int:
        with self.read() as txn:
            current = txn.revision
        if current > after:
            return current
        with self._revision_cond:
            self._revision_cond.wait(timeout)
        with self.read() as txn:
            return txn.revision

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
