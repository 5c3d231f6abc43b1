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
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1 = "grpc.reflection.v1.ServerReflection"


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


def serve_reflection(names: list[str], server: grpc.Server | aio.Server) -> None:
    """grpcio-reflection's servicer for ``names`` (the v1 name added), under both names."""
    names = [*names, reflection.SERVICE_NAME, V1]
    pool: Any = _Pool()
    servicer: Any = (
        reflection.aio.ReflectionServicer(names, pool=pool)
        if isinstance(server, aio.Server)
        else reflection.ReflectionServicer(names, pool=pool)
    )
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (reflection.SERVICE_NAME, V1)
        )
    )
