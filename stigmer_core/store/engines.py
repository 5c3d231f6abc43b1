"""Choosing an engine from one setting: a directory is LMDB, a URL is PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.protocol import Store, StoreUse
from stigmer_core.store.retention import EventRetention


def is_database_url(target: str | Path | None) -> bool:
    """``postgresql://`` or ``postgres://``: a PostgreSQL store."""
    if not isinstance(target, str) or "://" not in target:
        return False
    return target.split("://", 1)[0].lower() in ("postgresql", "postgres")


def database_identity(url: str) -> tuple[str, int, str, str]:
    """Which store a database URL names: host, port, database and schema, whatever else differs
    (its user and password, other parameters, ``postgres://`` for ``postgresql://``), so two
    settings naming one store are told the same. Read as libpq's defaults fill them: port 5432,
    the database named as the user, the schema ``stigmer``."""
    from urllib.parse import parse_qsl, urlsplit

    from stigmer_core.store.postgres_settings import DEFAULT_SCHEMA

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    database = parts.path.lstrip("/") or query.get("dbname") or parts.username or ""
    host = (parts.hostname or query.get("host") or "").lower()
    return host, parts.port or 5432, database, query.get("schema") or DEFAULT_SCHEMA


def open_store(
    target: str | Path,
    *,
    durable: bool = True,
    retention: EventRetention | None = None,
    read_only: bool = False,
    use: StoreUse = StoreUse.NONE,
    existing: bool = False,
) -> Store:
    """The store at ``target``: a PostgreSQL URL, or an LMDB data directory.

    psycopg is imported only when a URL asks for it, so an LMDB-only process
    pays nothing for the team server's engine. ``read_only`` opens an LMDB
    store's environment read-only (``LmdbStore``); a database is opened as
    always (what keeps it unwritten is ``ReadOnlyStore`` above it). ``use``: how the
    application holds a database beside others (``postgres_use``); LMDB's daemon and the
    commands that need it gone keep apart by the data directory's lock instead. ``existing``:
    a database schema that holds no store is refused, not created (an LMDB directory's caller
    looks for its data file first).
    """
    if is_database_url(target):
        from stigmer_core.store import postgres_store

        return postgres_store.PostgresStore(
            str(target), durable=durable, retention=retention, use=use, existing=existing
        )
    return LmdbStore(target, durable=durable, retention=retention, read_only=read_only)


def describe(target: str | Path) -> str:
    """``target`` for a log line: a URL without its password, or the directory."""
    if is_database_url(target):
        from stigmer_core.store.postgres_store import redact_url

        return redact_url(str(target))
    return str(target)
