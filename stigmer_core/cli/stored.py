"""Which kinds the local store holds objects of, read from its keys.

``export --all`` exports what the installed kinds can list. Objects whose
kind's plugin has been uninstalled stay in the store (docs/plugins.md) but no
rpc serves them, so a backup would miss them without a word. This module
opens the LMDB environment read-only (beside a running daemon too: LMDB
allows readers in other processes) and names every key prefix under the
object keys (``o/<key_prefix>/<id>``, ``stigmer_core.store.keys``) with its
object count. Distinct prefixes are found by seeking past each one, so only
the objects of the kinds asked about are counted one by one.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from stigmer_core.store import keys

_OBJECTS = b"o/"


def unserved(data_dir: Path, served: Collection[str]) -> dict[str, int] | None:
    """Key prefix -> object count for every stored kind not in ``served``; None when it cannot be read.

    A data directory without an LMDB store holds nothing: an empty mapping.
    """
    if not (data_dir / "data.mdb").exists():
        return {}
    import lmdb

    try:
        env = lmdb.open(str(data_dir), readonly=True, lock=True, readahead=False, max_readers=1024)
    except lmdb.Error:
        return None
    found: dict[str, int] = {}
    try:
        with env.begin() as txn, txn.cursor() as cursor:
            position = _OBJECTS
            while cursor.set_range(position):
                key = bytes(cursor.key())
                if not key.startswith(_OBJECTS):
                    break
                prefix, _, _ = key[len(_OBJECTS) :].partition(b"/")
                start = keys.object_prefix(prefix.decode())
                position = start[:-1] + b"0"  # the first key after every "<prefix>/..." ('0' follows '/')
                name = prefix.decode()
                if name in served:
                    continue
                count = 0
                if cursor.set_range(start):
                    for stored in cursor.iternext(keys=True, values=False):
                        if not bytes(stored).startswith(start):
                            break
                        count += 1
                found[name] = count
    finally:
        env.close()
    return found
