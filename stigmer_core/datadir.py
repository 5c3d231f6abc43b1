"""One daemon per data directory, enforced with an advisory file lock; and
who may read what the daemon writes.

The lock file also records the daemon's pid and address, so a second daemon
can say who holds the directory and a client can find the running one.

Everything in a data directory is its owner's alone: the store holds
sealed secrets and the key that opens them may sit beside it, so the
directory is 0700 and every file the daemon writes 0600, whatever the
umask (modes are set explicitly, not left to the umask's mercy, and a
directory made by an older version is tightened when it is opened).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from stigmer_core.errors import DataDirBusy, StartupError

__all__ = ["DIR_MODE", "FILE_MODE", "DataDirBusy", "DataDirLock", "holder", "open_private", "private_dir", "secure"]

LOCK_NAME = "daemon.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` owner-only (missing parents too), or tighten it to 0700 if it exists.

    Only the directory itself is tightened: a parent that already exists
    (``/tmp``, a home directory) is the user's business. Everything that
    makes a data directory its daemon's starts here, so a directory on a
    read-only mount is refused here, saying so and what can still read it.
    """
    try:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(directory, DIR_MODE)
        os.chmod(path, DIR_MODE)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        raise StartupError(
            f"{path} is on a read-only mount: the daemon needs to write it (check the mount; "
            "`stigmer export`, `get` and `list` can still read it)"
        ) from None
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """``os.open`` a file that is 0600 whatever the umask, including one that existed with a wider mode."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def secure(data_dir: Path) -> None:
    """Make ``data_dir`` 0700 and every file in it 0600 (a directory an older version made)."""
    private_dir(data_dir)
    for entry in os.scandir(data_dir):
        if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mode & 0o077:
            os.chmod(entry.path, FILE_MODE)


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
        secure(self.data_dir)
        handle = os.fdopen(open_private(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND), "a+")
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

    def record(
        self, *, address: str, tls: bool = False, store: str | None = None, kinds: dict[str, str] | None = None
    ) -> None:
        """``store``: what the daemon serves, as its log names it (a database URL without its
        password; empty for the local store in this directory), so a command given another
        store is not sent to this daemon's (``client.connect``). ``kinds``: the fingerprint of
        each kind it serves (``releases.fingerprint``), so a command whose plugins changed since
        the daemon started can say so (``cli.session``)."""
        handle = self._handle
        handle.seek(0)
        handle.truncate()
        info: dict[str, Any] = {"pid": os.getpid(), "address": address, **({"tls": True} if tls else {})}
        if store is not None:
            info["store"] = store
        if kinds:
            info["kinds"] = kinds
        handle.write(json.dumps(info))
        handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
