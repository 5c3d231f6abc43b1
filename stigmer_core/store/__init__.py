"""Transactional key-value storage behind every kind.

``protocol`` says what a store engine must do; ``lmdb_store`` is the embedded
default, ``postgres_store`` the team server's engine (several daemons on one
database), ``engines.open_store`` picks one from a path or a URL; ``keys`` is
the key layout; ``retention`` says how much of the event log every engine keeps. Engines know bytes and keys only: the kind-aware layer above
them (objects with their indexes and events) is ``stigmer_core.kinds.resources``,
so nothing here imports kinds or pipelines.

The names below are imported on first use (PEP 562): ``keys`` is read by
every client (``limits``, the kinds' runtimes), which should not load LMDB
and both engines with it (a tenth of a ``stigmer get`` against a daemon).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stigmer_core.lazy_names import lazy_names

if TYPE_CHECKING:
    from stigmer_core.store.engines import is_database_url, open_store
    from stigmer_core.store.lmdb_store import LmdbStore
    from stigmer_core.store.protocol import ReadTxn, SnapshotMoved, Store, WriteTxn
    from stigmer_core.store.retention import EventRetention

_WHERE = {
    "is_database_url": "stigmer_core.store.engines",
    "open_store": "stigmer_core.store.engines",
    "LmdbStore": "stigmer_core.store.lmdb_store",
    **dict.fromkeys(("ReadTxn", "SnapshotMoved", "Store", "WriteTxn"), "stigmer_core.store.protocol"),
    "EventRetention": "stigmer_core.store.retention",
}

__all__ = ["EventRetention", "LmdbStore", "ReadTxn", "SnapshotMoved", "Store", "WriteTxn", "is_database_url", "open_store"]


__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
