"""A TCP relay to PostgreSQL that can lose the database's answer to a COMMIT.

The commit is applied and notified on the server; the client that sent it never
hears so. ``lose_next_commit``: it hears nothing more and gives up after its
answer timeout (a broken network, a stalled path). ``end_commit``: it hears the
FATAL error a backend sends when an administrator terminates it just as it
finishes a commit (``pg_terminate_backend``) before it is ready for the next
statement, and its connection then closes.
Only plain (non-TLS) connections are looked into, so it serves the tests'
throwaway server.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

_COMMITTED = b"C" + struct.pack("!i", 11) + b"COMMIT\x00"
"""A COMMIT's CommandComplete message: the server has committed."""


def _fatal(sqlstate: str, message: str) -> bytes:
    """A protocol ErrorResponse of severity FATAL, as a backend sends before it exits."""
    fields = b"".join(
        tag + text.encode() + b"\x00" for tag, text in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\x00"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class _Relayed:
    """One relayed connection: what the relay does to the server's answers once it sent COMMIT."""

    def __init__(self) -> None:
        self.silenced = threading.Event()
        self.ending = False


class LosingRelay:
    """Listens on 127.0.0.1 and relays every connection to the URL's server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self._lock = threading.Lock()
        self._commits_to_pass = -1  # -1: disarmed
        self._ending = False
        self.lost = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_commit(self) -> None:
        """The next COMMIT's sender hears nothing more from the server."""
        self._arm(0, ending=False)

    def end_commit(self, passing: int = 0) -> None:
        """After ``passing`` COMMITs go through, the next one's sender hears that it committed,
        then that its connection was terminated, and the connection closes."""
        self._arm(passing, ending=True)

    def _arm(self, passing: int, *, ending: bool) -> None:
        with self._lock:
            self.lost.clear()
            self._commits_to_pass, self._ending = passing, ending

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, server]
            relayed = _Relayed()
            threading.Thread(target=self._up, args=(client, server, relayed), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, relayed), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, relayed: _Relayed) -> None:
        """Client to server, all of it: a lost answer's COMMIT still reaches the server."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"COMMIT" in data:
                    with self._lock:
                        if self._commits_to_pass == 0:
                            relayed.ending = self._ending
                            relayed.silenced.set()
                            self.lost.set()
                        if self._commits_to_pass >= 0:
                            self._commits_to_pass -= 1
                server.sendall(data)
        _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, relayed: _Relayed) -> None:
        with contextlib.suppress(OSError):
            seen = b""
            while data := server.recv(65536):
                if not relayed.silenced.is_set():
                    client.sendall(data)
                    continue
                seen += data
                committed = seen.find(_COMMITTED) if relayed.ending else -1
                if committed >= 0:
                    # COMMIT's answer, then the FATAL in place of the ReadyForQuery that would follow:
                    # the backend took the terminate once its commit was done, before the pipeline's
                    # Sync. Its client takes the error before it sees the socket close.
                    cut = committed + len(_COMMITTED)
                    client.sendall(seen[:cut] + _fatal("57P01", "terminating connection due to administrator command"))
                    threading.Event().wait(0.5)
                    break
        _close(client, server)

    def close(self) -> None:
        with self._lock:
            _close(*self._sockets)

    def __enter__(self) -> LosingRelay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
