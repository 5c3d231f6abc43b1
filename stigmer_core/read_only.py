"""A store an application may read and never write.

``Application.open(read_only=True)`` serves one: it is how a store whose
secret key is lost, or whose data file is on a read-only mount, is still
exported (docs/secrets.md, Losing the key; docs/cli.md, export).
Refusing at ``transact`` covers every write at once, the pipelines' and the
plugins' alike (a dry run too, since it runs in a write transaction it rolls
back), so no write path has to remember the mode. The refusal is a
``FailedPrecondition``: a request answers FAILED_PRECONDITION and the store
is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from stigmer_core.errors import FailedPrecondition
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.protocol import ReadTxn, Store, WriteTxn

T = TypeVar("T")

REFUSAL = (
    "the store is opened read-only (without its secret key: docs/secrets.md, Losing the key), so nothing "
    "can be written through this application; restore the key and open the store again to write"
)
MOUNT_REFUSAL = (
    "the store is opened read-only (its data file is on a read-only mount), so nothing can be written "
    "through this application; copy the data directory to a writable disk (or remount it read-write once "
    "the disk is checked) and open it there to write"
)


def refusal(store: Store) -> str:
    """Why writes are refused, said of what made the store read-only."""
    return MOUNT_REFUSAL if isinstance(store, LmdbStore) and store.mounted_read_only else REFUSAL


class ReadOnlyStore:
    """``store`` for reading; every write transaction is refused before it begins."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._refusal = refusal(store)

    def read(self, *, restartable: bool = False) -> AbstractContextManager[ReadTxn]:
        return self._store.read(restartable=restartable)

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        raise FailedPrecondition(self._refusal, reason="READ_ONLY")

    def wait_for_revision(self, after: int, timeout: float) -> int:
        return self._store.wait_for_revision(after, timeout)

    def close(self) -> None:
        self._store.close()
