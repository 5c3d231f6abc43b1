"""Transactional key-value storage behind every kind.

``protocol`` says what a store engine must do; ``lmdb_store`` is the embedded
default; ``keys`` is the key layout; ``resources`` stores kind objects with
their indexes and events on top of any engine.
"""

from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.protocol import ReadTxn, Store, WriteTxn

__all__ = ["LmdbStore", "ReadTxn", "Store", "WriteTxn"]
