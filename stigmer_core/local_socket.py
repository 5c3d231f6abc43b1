"""The daemon's Unix socket in its data directory, reachable whatever the directory's path length.

A socket's address (``sockaddr_un``) holds 108 bytes, so a data directory
deeper than that could not have one, and a local CLI then had to reach the
daemon over its TCP address, which for a TLS daemon needs a CA it is not
given. On Linux the socket is named through a descriptor of its directory
(``/proc/self/fd/N/stigmer.sock``): the kernel resolves the long path from
the descriptor, the address stays short, and the socket stays in the data
directory with its 0600 mode. The descriptor must stay open while the
server listens or the channel may reconnect, so ``UnixTarget`` owns it.
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "stigmer.sock"
MAX_SOCKET_PATH = 100
"""The longest socket path named directly (``sockaddr_un`` holds 108 bytes with its NUL)."""
_BY_DESCRIPTOR = hasattr(os, "O_PATH") and Path("/proc/self/fd").is_dir()


def socket_path(data_dir: Path) -> Path | None:
    """Where the daemon of ``data_dir`` listens locally (None: the path is too long for a socket
    and this system cannot name one through a descriptor)."""
    path = data_dir / SOCKET_NAME
    return path if _BY_DESCRIPTOR or len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


class UnixTarget:
    """The grpc address of the socket at ``path``, with the directory descriptor a long path needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            self.address = f"unix:{path}"
            return
        self._fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.address = f"unix:/proc/self/fd/{self._fd}/{path.name}"

    def close(self) -> None:
        """Close the descriptor (once nothing binds or connects through the address any more)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
