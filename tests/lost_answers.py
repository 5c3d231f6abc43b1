"""A TCP relay to PostgreSQL that can lose the database's answer to one COMMIT.

The commit is applied and notified on the server; the client that sent it hears
nothing and gives up after its answer timeout: the outcome a broken network or
a stalled path leaves a daemon with, made on purpose. Only plain (non-TLS)
connections are looked into, so it serves the tests' throwaway server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit


class LosingRelay:
    """Listens on 127.0.0.1 and relays every connection to the URL's server; ``lose_next_commit``
    makes the next connection that sends COMMIT hear nothing more from the server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self._armed = threading.Event()
        self.lost = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_commit(self) -> None:
        self.lost.clear()
        self._armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, server]
            silenced = threading.Event()
            threading.Thread(target=self._up, args=(client, server, silenced), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, silenced), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, silenced: threading.Event) -> None:
        """Client to server, all of it: a lost answer's COMMIT still reaches the server."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"COMMIT" in data and self._armed.is_set():
                    self._armed.clear()
                    silenced.set()
                    self.lost.set()
                server.sendall(data)
        _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, silenced: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not silenced.is_set():
                    client.sendall(data)
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
