"""One daemon per data directory, enforced with an advisory file lock.

The lock file also records the daemon's pid and address, so a second daemon
can say who holds the directory and a client can find the running one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from stigmer_core.errors import DataDirBusy

__all__ = ["DataDirBusy", "DataDirLock", "holder"]

LOCK_NAME = "daemon.lock"


def holder(data_dir: Path) -> dict[str, Any] | None:
    """Who holds ``data_dir`` (pid, address), or None when no daemon does."""
    path = data_dir / LOCK_NAME
    if not path.exists():
        return None
    with path.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info: dict[str, Any] = json.loads(path.read_text() or "{}")
            except json.JSONDecodeError:
                info = {}
            return info
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class DataDirLock:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._handle: Any = None

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.data_dir / LOCK_NAME).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                info = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                info = {}
            handle.close()
            who = f" (pid {info['pid']}, listening on {info.get('address', '?')})" if "pid" in info else ""
            raise DataDirBusy(f"another stigmer daemon is using {self.data_dir}{who}") from None
        self._handle = handle
        self.record(address="")

    def record(self, *, address: str) -> None:
        handle = self._handle
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "address": address}))
        handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
