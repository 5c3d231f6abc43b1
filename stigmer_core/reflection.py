"""Server reflection under both its names, answering for methods as the protocol allows.

grpcio-reflection serves ``grpc.reflection.v1alpha.ServerReflection`` only.
``grpc.reflection.v1`` is the same protocol (the same messages, field for
field) under another package, which clients that speak only ``v1`` ask for,
so the one servicer answers both, and the ``v1`` file (v1alpha's, renamed)
is there to be described: a client listing the services and describing each
must find every one it is told of. The protocol also lets a client ask for
the file of a method (``Service.method``, as ``grpcurl describe`` does); the
descriptor pool knows only services and messages by name, so a method's
name is answered with its service's file.

Reflection answers without a token, so what one caller can hold of it is
bounded: at most ``PoolSizes.reflection_streams`` streams are open at once
(``STIGMER_MAX_REFLECTION_STREAMS``), the next is RESOURCE_EXHAUSTED at
once, and request bytes that do not parse are INVALID_ARGUMENT as for every
other rpc (``decoding``), where grpc answers INTERNAL and logs an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

from stigmer_core import status
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import ResourceExhausted
from stigmer_core.open_streams import OpenStreams

V1 = "grpc.reflection.v1.ServerReflection"
REQUEST = reflection_pb2.ServerReflectionRequest
SETTING = "STIGMER_MAX_REFLECTION_STREAMS"


def _v1_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding ``grpc/reflection/v1/reflection.proto``: v1alpha's file under v1's names."""
    v1 = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    alpha, renamed = f".{v1.package}.", ".grpc.reflection.v1."
    v1.name, v1.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    v1.ClearField("options")
    for message in v1.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(alpha, renamed)
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(alpha, renamed)
            method.output_type = method.output_type.replace(alpha, renamed)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1)
    return pool


class _Pool:
    """The default pool, with the ``v1`` file beside it and methods found by their service."""

    def __init__(self) -> None:
        self._default = descriptor_pool.Default()
        self._v1 = _v1_pool()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._default, name)

    def FindFileByName(self, name: str) -> FileDescriptor:
        try:
            return self._default.FindFileByName(name)
        except KeyError:
            return self._v1.FindFileByName(name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        for pool in (self._default, self._v1):
            try:
                return pool.FindFileContainingSymbol(symbol)
            except KeyError:
                service, _, method = symbol.rpartition(".")
                try:
                    found = pool.FindServiceByName(service)
                except KeyError:
                    continue
                if method in found.methods_by_name:
                    return found.file
        raise KeyError(symbol)


def _sync_info(servicer: Any, slots: OpenStreams, name: str) -> Callable[..., Iterator[Any]]:
    def parsed(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            if isinstance(request, Malformed):
                status.abort(context, refusal(REQUEST, request, name))
            yield request

    def info(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            give_back = slots.take()
        except ResourceExhausted as exc:
            status.abort(context, exc)
        # grpc stops pulling a stream whose client went away and drops it unclosed: the call's
        # end gives the slot back then, not the generator's collection
        context.add_callback(give_back)
        try:
            yield from servicer.ServerReflectionInfo(parsed(requests, context), context)
        finally:
            give_back()

    return info


def _async_info(servicer: Any, slots: OpenStreams, name: str) -> Callable[..., AsyncIterator[Any]]:
    async def parsed(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Malformed):
                await status.abort_call(context, refusal(REQUEST, request, name))
            yield request

    async def info(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            give_back = slots.take()
        except ResourceExhausted as exc:
            await status.abort_call(context, exc)
        try:
            async for response in servicer.ServerReflectionInfo(parsed(requests, context), context):
                yield response
        finally:
            give_back()

    return info


def reflection_handlers(
    names: list[str], slots: OpenStreams, *, asynchronous: bool
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """grpcio-reflection's servicer for ``names`` (the v1 name added), under both names:
    service -> its one method's handler, for grpc's asyncio server or its sync server."""
    names = [*names, reflection.SERVICE_NAME, V1]
    pool: Any = _Pool()
    servicer: Any = (
        reflection.aio.ReflectionServicer(names, pool=pool)
        if asynchronous
        else reflection.ReflectionServicer(names, pool=pool)
    )
    build = _async_info if asynchronous else _sync_info
    return {
        service: {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                build(servicer, slots, f"{service.rpartition('.')[0]}.ServerReflectionRequest"),
                request_deserializer=tolerant(REQUEST),
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
        for service in (reflection.SERVICE_NAME, V1)
    }
