"""A raw HTTP/2 client that opens gRPC calls with their headers and never sends their message.

An ordinary gRPC client sends a unary call's headers and its one message together; this one
stops after the headers, as someone trying to hold a server's threads would. It answers the
server's pings and settings (the ``h2`` package does, when its bytes are read), records how
each stream ended, and sends no grpc-timeout, so only the server can end a stream. Given a
``message``, it sends it whole instead, but never reads what comes back: it acknowledges no
data, so once HTTP/2's windows (64 KiB) are full the server can send it nothing more.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class HeldStreams:
    """One connection to ``address`` (host:port) with ``count`` calls of ``path`` left waiting."""

    def __init__(
        self,
        address: str,
        path: str,
        count: int,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        end_stream: bool = False,
        message: bytes | None = None,
        window: int | None = None,
    ) -> None:
        """``end_stream``: close each call's request stream with its headers, still with no message.
        ``message``: send each call this request (serialized), whole. ``window``: the flow control
        window it gives each stream (0: the server can send it no message at all)."""
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        self._sock.settimeout(None)
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.ended: dict[int, tuple[str, str]] = {}
        """Stream id -> (grpc-status, grpc-message) from its trailers, or ("reset", code)."""
        self.closed = False
        if window is not None:
            self._conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        with self._lock:
            self._conn.initiate_connection()
            self.ids = []
            for _ in range(count):
                stream = self._conn.get_next_available_stream_id()
                headers = [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", address),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    *metadata,
                ]
                self._conn.send_headers(stream, headers, end_stream=end_stream and message is None)
                if message is not None:
                    self._conn.send_data(stream, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
                self.ids.append(stream)
            self._sock.sendall(self._conn.data_to_send())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                with self._lock:
                    events = self._conn.receive_data(data)
                    for event in events:
                        self._record(event)
                    out = self._conn.data_to_send()
                    if out:
                        self._sock.sendall(out)
                    self._changed.notify_all()
        except OSError:
            pass
        except h2.exceptions.ProtocolError:  # a frame h2 will not take once closed (a server's
            # shutdown PING after its GOAWAY): gone, as a grpc client closing its connection
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self.closed = True
            self._changed.notify_all()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.TrailersReceived) or (
            isinstance(event, h2.events.ResponseReceived) and event.stream_ended is not None
        ):
            fields = dict(event.headers)
            self.ended[event.stream_id] = (fields.get("grpc-status", "?"), fields.get("grpc-message", ""))
        elif isinstance(event, h2.events.StreamReset):
            self.ended.setdefault(event.stream_id, ("reset", str(event.error_code)))

    def wait_all_ended(self, timeout: float) -> dict[int, tuple[str, str]]:
        """How each stream ended, once all have (or the connection closed, or ``timeout`` passed)."""
        return self.wait_ended(len(self.ids), timeout)

    def wait_ended(self, count: int, timeout: float) -> dict[int, tuple[str, str]]:
        """How the streams that ended did, once ``count`` have (or the connection closed, or
        ``timeout`` passed)."""
        with self._lock:
            self._changed.wait_for(lambda: self.closed or len(self.ended) >= count, timeout)
            return dict(self.ended)

    def close(self) -> None:
        with contextlib.suppress(OSError), self._lock:
            self._conn.close_connection()
            self._sock.sendall(self._conn.data_to_send())
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(10)

    def __enter__(self) -> HeldStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
