"""Transactional key-value storage behind every kind.

``protocol`` says what a store engine must do; ``lmdb_store`` is the embedded
default, ``postgres_store`` the team server's engine (several daemons on one
database), ``engines.open_store`` picks one from a path or a URL; ``keys`` is
the key layout; ``retention`` says how much of the event log every engine keeps. Engines know bytes and keys only: the kind-aware layer above
them (objects with their indexes and events) is ``stigmer_core.kinds.resources``,
so nothing here imports kinds or pipelines.
"""

from stigmer_core.store.engines import is_database_url, open_store
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.protocol import ReadTxn, SnapshotMoved, Store, WriteTxn
from stigmer_core.store.retention import EventRetention

__all__ = ["EventRetention", "LmdbStore", "ReadTxn", "SnapshotMoved", "Store", "WriteTxn", "is_database_url", "open_store"]
