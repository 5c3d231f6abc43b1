"""grpc's own health service (grpcio-health-checking), with requests parsed as every rpc's are.

The servicer is the library's (``health.HealthServicer``, or its asyncio
twin); only its registration is built here, as ``health_pb2_grpc`` builds it,
with the framework's tolerant deserializer (``decoding``): a request whose
bytes do not parse is INVALID_ARGUMENT, where grpc answers INTERNAL (UNKNOWN
on its asyncio server) and logs an error for the caller's fault. On grpc's
sync server the caller runs the handlers on a pool of their own
(``ServerPools.health``), so a load balancer's check never queues behind
writes holding every rpc thread. Watch streams are bounded (``HealthWatches``) and end
when their server stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2
from grpc_health.v1.health import aio as health_aio

from stigmer_core import status
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import ResourceExhausted
from stigmer_core.open_streams import OpenStreams

SERVICE = health.SERVICE_NAME
REQUEST = health_pb2.HealthCheckRequest


SETTING = "STIGMER_MAX_HEALTH_WATCHES"
STOPPING = "the server is stopping (it answered NOT_SERVING): watch another, or this one again once it is back"


class HealthWatches:
    """The open health Watch streams: at most ``limit`` (``STIGMER_MAX_HEALTH_WATCHES``), since
    they answer without a token and 3,000 of them took 65 MB of a daemon; and each ends when its
    server stops, once told NOT_SERVING, where it held the stop for its whole grace (10 s)."""

    def __init__(self, limit: int) -> None:
        self.slots = OpenStreams(limit, "health watch stream", SETTING)
        self._ends: set[Callable[[], object]] = set()
        self._lock = threading.Lock()

    def opened(self, end: Callable[[], object]) -> Callable[[], None]:
        """Count a watch (RESOURCE_EXHAUSTED past the bound) that ``end`` ends; what forgets it."""
        give_back = self.slots.take()
        with self._lock:
            self._ends.add(end)

        def closed() -> None:
            give_back()
            with self._lock:
                self._ends.discard(end)

        return closed

    def end_all(self) -> None:
        with self._lock:
            ends, self._ends = list(self._ends), set()
        for end in ends:
            end()


def _sync(
    servicer: health.HealthServicer, watches: HealthWatches
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def check(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        return servicer.Check(request, context)

    def watch(request: Any, context: grpc.ServicerContext, send: Callable[[Any], None]) -> None:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        def end() -> None:  # at the server's stop, from its thread
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(STOPPING)
            send(None)  # None ends a non-blocking stream

        try:
            closed = watches.opened(end)
        except ResourceExhausted as exc:
            status.abort(context, exc)
        context.add_callback(closed)
        servicer.Watch(request, context, send)

    # answers through ``send`` as the status changes, holding no thread (grpc's experimental_non_blocking)
    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    return check, watch


def _async(
    servicer: health_aio.HealthServicer, watches: HealthWatches
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def check(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        return await servicer.Check(request, context)

    async def watch(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        task = asyncio.current_task()
        assert task is not None
        try:
            closed = watches.opened(task.cancel)  # called on the loop, at stop
        except ResourceExhausted as exc:
            await status.abort_call(context, exc)
        try:
            await servicer.Watch(request, context)
        except asyncio.CancelledError:
            if not context.done():  # ended by the stop, not by its client: told so first, once more
                # if the servicer's own NOT_SERVING went out before the stop came (a repeat is harmless)
                await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING))
                await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
            raise
        finally:
            closed()

    return check, watch


def health_handlers(
    servicer: health.HealthServicer | health_aio.HealthServicer, watches: HealthWatches
) -> dict[str, grpc.RpcMethodHandler]:
    """Check and Watch of ``servicer`` (the sync or the asyncio one), by method name."""
    if isinstance(servicer, health_aio.HealthServicer):
        check, watch = _async(servicer, watches)
    else:
        check, watch = _sync(servicer, watches)
    parse = tolerant(REQUEST)
    answer = health_pb2.HealthCheckResponse.SerializeToString
    return {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=parse, response_serializer=answer),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request_deserializer=parse, response_serializer=answer),
    }
