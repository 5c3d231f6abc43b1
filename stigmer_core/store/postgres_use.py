"""Who holds a team server's database: its daemons share it, a key rotation holds it alone.

A key rotation re-seals every secret under a new key; a daemon left running
through it still holds the old key, and refuses every request that seals or
opens a secret until it is restarted with the new one. The rotating command
could not see those daemons, so stopping them was left to the operator.
Now each daemon (every application that keeps the store open and is not a
command) holds a share of a session-level advisory lock for as long as its
listener connection lives, and a rotation takes the same lock whole, so it
is refused while any daemon holds a share and names their connections.

An advisory lock needs no privilege, and ``pg_locks`` shows every session's
to any role, so a daemon's role needs no grant for this. The lock is per
schema: the two-key form keeps it apart from the migration's single-key lock.
A connection that drops releases its share with it; the listener takes it
again as it reconnects.
"""

from __future__ import annotations

import zlib
from typing import Any

USE_CLASS = 0x53544753
"""The first key of the use lock (``STGS``), the same for every schema."""

_HOLDERS = b"""
SELECT l.pid, a.application_name, host(a.client_addr)
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.pid <> pg_backend_pid()
ORDER BY l.pid
"""


def use_key(schema: str) -> tuple[int, int]:
    """The lock's two keys for ``schema``: positive, so ``pg_locks``' oids compare as given."""
    return USE_CLASS, zlib.crc32(schema.encode()) & 0x7FFFFFFF


def take_share(conn: Any, schema: str) -> bool:
    """Take a share on ``conn``'s session; False while a sole holder has the store."""
    row = conn.execute(b"SELECT pg_try_advisory_lock_shared(%s, %s)", use_key(schema)).fetchone()
    return bool(row and row[0])


def take_sole(conn: Any, schema: str) -> list[str]:
    """Take the whole lock on ``conn``'s session; what holds a share when it cannot (else [])."""
    row = conn.execute(b"SELECT pg_try_advisory_lock(%s, %s)", use_key(schema)).fetchone()
    if row and row[0]:
        return []
    holders = [_described(pid, name, host) for pid, name, host in conn.execute(_HOLDERS, use_key(schema))]
    return holders or ["a session that let go of it just now"]


def _described(pid: int, name: str | None, host: str | None) -> str:
    """A holder as ``pg_stat_activity`` shows it to this role (another role's address may be hidden)."""
    parts = [f"pid {pid} on the database server"]
    if name:
        parts.append(f"application_name {name}")
    if host:
        parts.append(f"from {host}")
    return ", ".join(parts)


def held_alone(schema: str) -> str:
    """Why a daemon cannot take its share (the start waits for it, as for a database that is down)."""
    return (
        f"schema {schema!r} is held alone by a key rotation (stigmer secrets rotate-key); this daemon starts "
        "when it ends, and then needs the new key"
    )


def in_use(schema: str, holders: list[str]) -> str:
    """Why a sole holder was refused."""
    count = len(holders)
    which = "one daemon holds" if count == 1 else f"{count} daemons hold"
    return (
        f"schema {schema!r} is in use: {which} it ({'; '.join(holders)}); stop every daemon of the database "
        "first (docs/secrets.md, Rotating the key of a team server), then run this again"
    )
