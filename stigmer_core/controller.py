"""The generic controller factory: rpc method -> operation -> pipeline.

For every method of every kind's Command and Query services it builds one
``grpc.RpcMethodHandler`` from the compiled binding. There is no servicer
class and no handler function per kind; both the network server and the
in-process channel serve exactly these handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from stigmer_core import status
from stigmer_core.errors import FieldViolation, InvalidArgument, ResourceExhausted
from stigmer_core.kinds.resources import Resources
from stigmer_core.kinds.runtime import KindRuntime, MethodBinding, Registry
from stigmer_core.limits import MESSAGE_BYTES
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.store.protocol import Store, WriteTxn


class _Malformed:
    """Stands for request bytes that did not parse, so the handler (not grpc's
    deserializer, which would answer INTERNAL) can answer INVALID_ARGUMENT."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    parse = cls.FromString

    def deserialize(data: bytes) -> Message | _Malformed:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or anything the parser raises on garbage
            return _Malformed(str(exc) or type(exc).__name__)

    return deserialize


class Executor:
    """Runs one binding's pipeline for one request."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store

    def run(
        self,
        kind: KindRuntime,
        binding: MethodBinding,
        request: Message,
        metadata: Sequence[tuple[str, Any]] = (),
        active: Callable[[], bool] | None = None,
    ) -> Any:
        ctx = RequestContext(
            kind=kind,
            registry=self.registry,
            operation=binding.operation,
            request=request,
            metadata=metadata,
            engine=self.store,
        )
        if active is not None:
            ctx.active = active
        pipeline = binding.pipeline
        for run_step in pipeline.run_pre:
            run_step(ctx)
        if pipeline.writes:

            def body(txn: WriteTxn) -> Any:
                ctx.reset_transaction_state()
                ctx.operation = binding.operation
                ctx.resources = resources = Resources(txn, self.registry)
                for run_step in pipeline.run_txn:
                    run_step(ctx)
                resources.publish()  # whatever a custom pipeline wrote without a publish step
                _check_answerable(ctx.response, binding)
                return ctx.response

            response = self.store.transact(body)
        else:
            with self.store.read() as txn:
                ctx.resources = Resources(txn, self.registry)
                for run_step in pipeline.run_txn:
                    run_step(ctx)
                response = ctx.response
        if response is None:
            raise RuntimeError(f"pipeline of {binding.path} produced no response")
        return response


def _check_answerable(response: Any, binding: MethodBinding) -> None:
    """A write whose answer could not be sent is rolled back, never committed unanswered."""
    if isinstance(response, Message) and response.ByteSize() > MESSAGE_BYTES:
        raise ResourceExhausted(
            f"the answer of {binding.path} would take {response.ByteSize()} bytes, more than the "
            f"{MESSAGE_BYTES}-byte message limit; nothing was written"
        )


def _malformed(binding: MethodBinding, request: _Malformed) -> InvalidArgument:
    name = binding.request_cls.DESCRIPTOR.full_name
    return InvalidArgument(
        f"request is not a valid {name}: {request.reason}", [FieldViolation("(request)", f"cannot be parsed as {name}")]
    )


def _handler(executor: Executor, kind: KindRuntime, binding: MethodBinding) -> grpc.RpcMethodHandler:
    run = executor.run
    request_deserializer = _deserializer(binding.request_cls)
    response_serializer = binding.response_cls.SerializeToString

    if binding.server_streaming:

        def stream(request: Message | _Malformed, context: grpc.ServicerContext) -> Iterator[Message]:
            if isinstance(request, _Malformed):
                status.abort(context, _malformed(binding, request))
            try:
                yield from run(kind, binding, request, context.invocation_metadata(), context.is_active)
            except Exception as exc:
                status.abort(context, exc)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=request_deserializer, response_serializer=response_serializer
        )

    def unary(request: Message | _Malformed, context: grpc.ServicerContext) -> Message:
        if isinstance(request, _Malformed):
            status.abort(context, _malformed(binding, request))
        try:
            response: Message = run(kind, binding, request, context.invocation_metadata())
            return response
        except Exception as exc:
            status.abort(context, exc)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=request_deserializer, response_serializer=response_serializer
    )


def build_handlers(registry: Registry, store: Store) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """service full name -> method name -> handler, for every kind."""
    executor = Executor(registry, store)
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for kind in registry.kinds:
        for path, binding in kind.methods.items():
            service, method = path[1:].split("/")
            services.setdefault(service, {})[method] = _handler(executor, kind, binding)
    return services
