"""grpc's health service (``grpc.health.v1.Health``), served for both of grpc's servers.

Its messages and service name are grpcio-health-checking's; its servicer is
this module's, since the library's lets one client stall it for everyone.
The library sends each watcher its new status while holding the lock every
``Check`` takes (the sync servicer) or the lock every status change takes
(the asyncio one), and a send waits for the client's flow control: one
unauthenticated watch whose client reads nothing hung every health check of
the daemon (a load balancer's, Kubernetes' probes) and held its stop past its
limit. Here a status change only marks each watcher; a watcher's own sender
sends, outside any shared lock, the latest status once the previous send is
out (statuses in between are skipped, as the protocol allows). Watch streams
are bounded (``STIGMER_MAX_HEALTH_WATCHES``, since they answer without a
token) and end when their server stops: told NOT_SERVING, then ended
UNAVAILABLE, or cancelled if their client reads nothing.

Requests are parsed with the framework's tolerant deserializer
(``decoding``): bytes that do not parse are INVALID_ARGUMENT, where grpc
answers INTERNAL. On grpc's sync server the caller runs the handlers on a
pool of their own (``ServerPools.health``), so a check never queues behind
writes holding every rpc thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2

from stigmer_core import status
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import ResourceExhausted
from stigmer_core.open_streams import OpenStreams

SERVICE = health.SERVICE_NAME
REQUEST = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse
SETTING = "STIGMER_MAX_HEALTH_WATCHES"
STOPPING = "the server is stopping (it answered NOT_SERVING): watch another, or this one again once it is back"
END_WAIT_SECONDS = 1.0
"""How long a stop waits for its watchers to be sent NOT_SERVING before it cancels those whose
client reads nothing."""


class _Watcher(Protocol):
    def changed(self) -> None: ...

    def end(self, deadline: float) -> None: ...


class Health:
    """The status of each service, which ``Check`` answers and ``Watch`` streams follow.

    ``set`` and ``enter_graceful_shutdown`` may be called from any thread and never wait for
    a client."""

    def __init__(self, max_watches: int) -> None:
        self.slots = OpenStreams(max_watches, "health watch stream", SETTING)
        self._lock = threading.Lock()
        self._status: dict[str, int] = {}
        self._closing = False
        self._watchers: set[_Watcher] = set()
        self._senders = futures.ThreadPoolExecutor(max_watches, thread_name_prefix="stigmer-health-watch")
        """A sync server's watchers send on these (a send whose client reads nothing holds one)."""

    def status(self, service: str) -> int | None:
        return self._status.get(service)

    def set(self, service: str, serving: int) -> None:
        with self._lock:
            if self._closing:
                return
            self._status[service] = serving
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.changed()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good: later ``set`` calls change nothing."""
        with self._lock:
            if self._closing:
                return
            for service in self._status:
                self._status[service] = Response.NOT_SERVING
            self._closing = True
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.changed()

    def watching(self, watcher: _Watcher) -> Callable[[], None]:
        """Follow ``watcher`` until what is returned is called."""
        with self._lock:
            self._watchers.add(watcher)

        def forget() -> None:
            with self._lock:
                self._watchers.discard(watcher)

        return forget

    def watchers(self) -> list[_Watcher]:
        with self._lock:
            return list(self._watchers)

    def end_watches(self) -> None:
        """End every watch (a server stopping, after ``enter_graceful_shutdown``): within
        ``END_WAIT_SECONDS`` for all of them together."""
        deadline = time.monotonic() + END_WAIT_SECONDS
        for watcher in self.watchers():
            watcher.end(deadline)

    def close(self) -> None:
        self._senders.shutdown(wait=False, cancel_futures=True)

    def submit(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # closed: the server stopped
            self._senders.submit(fn)


def _known(health: Health, service: str) -> int:
    found = health.status(service)
    return Response.SERVICE_UNKNOWN if found is None else found


class _SyncWatcher:
    """One watch on grpc's sync server, sent to through grpc's non-blocking ``send``."""

    def __init__(self, health: Health, service: str, context: grpc.ServicerContext, send: Callable[[Any], None]):
        self._health, self._service, self._context, self._send = health, service, context, send
        self._lock = threading.Condition()
        self._sending = False
        self._again = False
        self._last: int | None = None

    def changed(self) -> None:
        with self._lock:
            if self._sending:
                self._again = True
                return
            self._sending = True
        self._health.submit(self._run)

    def _run(self) -> None:
        while True:
            now = _known(self._health, self._service)
            if now != self._last:
                try:
                    self._send(Response(status=now))  # waits while the client reads nothing
                except Exception:  # the call ended meanwhile: nothing to send to
                    now = self._last or now
                self._last = now
            with self._lock:
                if not self._again:
                    self._sending = False
                    self._lock.notify_all()
                    return
                self._again = False

    def end(self, deadline: float) -> None:
        with self._lock:
            sent = self._lock.wait_for(lambda: not self._sending, max(deadline - time.monotonic(), 0))
        if sent:
            self._context.set_code(grpc.StatusCode.UNAVAILABLE)
            self._context.set_details(STOPPING)
            self._send(None)  # None ends a non-blocking stream
        else:  # its client reads nothing: the send never went out
            self._context.cancel()


class _AsyncWatcher:
    """One watch on grpc's asyncio server: its task sends, and waits for a change between sends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self._loop = loop
        self.task = task
        self.event = asyncio.Event()
        self.ending = False
        self.writing = False
        """Waiting for its client's window to send a status."""
        self.sent = 0
        """Statuses its client's window let out: one that never let one out is the watch a stop
        cancels at once; one that did, but whose last is slow under load, is given longer."""

    def changed(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop closed: the server stopped
            self._loop.call_soon_threadsafe(self.event.set)

    def end(self, deadline: float) -> None:
        self.ending = True  # its task ends it once its NOT_SERVING is out (``end_async_watches``)
        self.changed()


async def end_async_watches(health: Health) -> None:
    """End every watch of an asyncio server, on its loop: each is told NOT_SERVING and ended
    UNAVAILABLE; one whose client reads nothing is cancelled after ``END_WAIT_SECONDS``."""
    health.end_watches()
    watchers = [w for w in health.watchers() if isinstance(w, _AsyncWatcher)]
    if not watchers:
        return
    _, left = await asyncio.wait([w.task for w in watchers], timeout=END_WAIT_SECONDS)
    # Only a watch stalled on its client's window, which never let a status out, is cancelled now:
    # one whose task the loop has not run yet, or whose NOT_SERVING is still going out on a busy
    # machine, still sends it first (seen in CI: reading watchers cancelled, told nothing), within
    # a few more seconds at most.
    later = []
    for watcher in watchers:
        if watcher.task in left:
            if watcher.writing and not watcher.sent:
                watcher.task.cancel()
            else:
                later.append(watcher.task)
    if later:
        _, still = await asyncio.wait(later, timeout=4 * END_WAIT_SECONDS)
        for task in still:
            task.cancel()


def _sync(health: Health) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def check(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        found = health.status(request.service)
        if found is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            return Response()
        return Response(status=found)

    def watch(request: Any, context: grpc.ServicerContext, send: Callable[[Any], None]) -> None:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        try:
            give_back = health.slots.take()
        except ResourceExhausted as exc:
            status.abort(context, exc)
        watcher = _SyncWatcher(health, request.service, context, send)
        forget = health.watching(watcher)
        context.add_callback(lambda: (forget(), give_back()))
        watcher.changed()  # its first status

    # answers through ``send`` as the status changes, holding no thread (grpc's experimental_non_blocking)
    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    return check, watch


def _async(health: Health) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def check(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        found = health.status(request.service)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return Response(status=found)

    async def watch(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        try:
            give_back = health.slots.take()
        except ResourceExhausted as exc:
            await status.abort_call(context, exc)
        task = asyncio.current_task()
        assert task is not None  # a call's handler runs in a task of grpc's
        watcher = _AsyncWatcher(asyncio.get_running_loop(), task)
        forget = health.watching(watcher)
        try:
            last = None
            while True:
                now = _known(health, request.service)
                if now != last:
                    watcher.writing = True
                    await context.write(Response(status=now))  # waits while the client reads nothing
                    watcher.writing = False
                    watcher.sent += 1
                    last = now
                if watcher.ending:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
                await watcher.event.wait()
                watcher.event.clear()
        finally:
            forget()
            give_back()

    return check, watch


def health_handlers(health: Health, *, asynchronous: bool) -> dict[str, grpc.RpcMethodHandler]:
    """Check and Watch of ``health``, for grpc's asyncio server or its sync one, by method name."""
    check, watch = _async(health) if asynchronous else _sync(health)
    parse = tolerant(REQUEST)
    answer = Response.SerializeToString
    return {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=parse, response_serializer=answer),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request_deserializer=parse, response_serializer=answer),
    }
