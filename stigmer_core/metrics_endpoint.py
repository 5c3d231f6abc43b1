"""The ``/metrics`` endpoint: HTTP on a thread and event loop of its own, asking for no token.

A connection waits as a coroutine, not as a thread, so however many reach the
endpoint a scrape is answered at once. It must send its whole request head
within one deadline (``STIGMER_REQUEST_READ_TIMEOUT`` from when it
connected, not per read: one trickling a byte a second is dropped as one
that sends nothing), and at most ``MAX_CONNECTIONS`` wait for theirs at
once: one more drops the one that has waited longest. Served one at a time on one thread, with the
timeout per read, six silent sockets took every scrape down for 30 s and two
hundred for as long as they stayed. Scrapes run one after another on one
more thread: collecting reads the store, which the event loop must not wait
for.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import exposition
from prometheus_client.registry import CollectorRegistry

MAX_CONNECTIONS = 64
"""Connections the endpoint lets wait for their request at once: one more drops the one that has
waited longest, so silent connections, however many, never keep a scraper out."""
MAX_HEAD_BYTES = 16 << 10
"""The request line and headers a scrape may send: past it, the connection is dropped."""
NAME = "stigmer-metrics"


class Endpoint:
    """Serves ``registry`` on ``host``:``port`` until ``close``."""

    def __init__(self, registry: CollectorRegistry, timeout: float) -> None:
        self._registry = registry
        self._timeout = timeout
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        """Connections that have not sent their request yet, oldest first."""
        self._loop = asyncio.new_event_loop()
        self._scrapes = ThreadPoolExecutor(1, thread_name_prefix=f"{NAME}-scrape")
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int, family: socket.AddressFamily) -> int:
        """Listen, and serve from a thread; the port it listens on. An OSError if it cannot listen."""
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, host, port, family=family, limit=MAX_HEAD_BYTES, backlog=128)
        )
        self._thread = threading.Thread(target=self._loop.run_forever, name=NAME, daemon=True)
        self._thread.start()
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:

            async def stop() -> None:
                server.close()
                waiting = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in waiting:  # connections still open: ended here, not destroyed pending
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                self._loop.stop()

            asyncio.run_coroutine_threadsafe(stop(), self._loop)
            thread.join(timeout=10)
        self._scrapes.shutdown(wait=True, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        waiting = self._waiting
        if len(waiting) >= MAX_CONNECTIONS:  # the oldest still silent goes, so a scrape always gets in
            oldest = next(iter(waiting))
            del waiting[oldest]
            oldest.transport.abort()
        waiting[writer] = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            finally:
                waiting.pop(writer, None)
            answer = await self._answer(head)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # sent nothing, too much, or left: nothing to answer
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", "text/plain", b"only GET and HEAD\n")
        if path not in ("/metrics", "/"):
            return _response("404 Not Found", "text/plain", b"the metrics are at /metrics\n")
        accept = next((line.partition(":")[2].strip() for line in lines[1:] if line.lower().startswith("accept:")), "")
        encoder, content_type = exposition.choose_encoder(accept)
        body: Any = await self._loop.run_in_executor(self._scrapes, encoder, self._registry)
        return _response("200 OK", content_type, b"" if method == "HEAD" else body)


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
