"""grpc's own health service (grpcio-health-checking), with requests parsed as every rpc's are.

The servicer is the library's (``health.HealthServicer``, or its asyncio
twin); only its registration is built here, as ``health_pb2_grpc`` builds it,
with the framework's tolerant deserializer (``decoding``): a request whose
bytes do not parse is INVALID_ARGUMENT, where grpc answers INTERNAL (UNKNOWN
on its asyncio server) and logs an error for the caller's fault. On grpc's
sync server the caller runs the handlers on a pool of their own
(``ServerPools.health``), so a load balancer's check never queues behind
writes holding every rpc thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2
from grpc_health.v1.health import aio as health_aio

from stigmer_core import status
from stigmer_core.decoding import Malformed, refusal, tolerant

SERVICE = health.SERVICE_NAME
REQUEST = health_pb2.HealthCheckRequest


def _sync(servicer: health.HealthServicer) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def check(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        return servicer.Check(request, context)

    def watch(request: Any, context: grpc.ServicerContext, send: Callable[[Any], None]) -> None:
        if isinstance(request, Malformed):
            status.abort(context, refusal(REQUEST, request))
        servicer.Watch(request, context, send)

    # answers through ``send`` as the status changes, holding no thread (grpc's experimental_non_blocking)
    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    return check, watch


def _async(servicer: health_aio.HealthServicer) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def check(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        return await servicer.Check(request, context)

    async def watch(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, Malformed):
            await status.abort_call(context, refusal(REQUEST, request))
        await servicer.Watch(request, context)

    return check, watch


def health_handlers(servicer: health.HealthServicer | health_aio.HealthServicer) -> dict[str, grpc.RpcMethodHandler]:
    """Check and Watch of ``servicer`` (the sync or the asyncio one), by method name."""
    check, watch = _async(servicer) if isinstance(servicer, health_aio.HealthServicer) else _sync(servicer)
    parse = tolerant(REQUEST)
    answer = health_pb2.HealthCheckResponse.SerializeToString
    return {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=parse, response_serializer=answer),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request_deserializer=parse, response_serializer=answer),
    }
