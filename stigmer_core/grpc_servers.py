"""The two gRPC servers a daemon runs on, behind one face; ``server.Server`` picks one.

grpc's asyncio server (``AsyncServing``) serves a store that never waits on
I/O (LMDB): its event loop receives every call, reads run right there and
writes queue for the group commit from it, so a call costs no thread
handoff. grpc's sync server (``SyncServing``) serves a database: there every
read waits a round trip on a pool thread, and the asyncio server would hand
each such call to the thread and back (two handoffs where the sync server's
poller makes one). Measured with h2load, 32 gets in flight: two PostgreSQL
daemons answered 3,690 gets/s on the asyncio server against 7,410 on the
sync one, one daemon 3,150 against 4,190 (medians of 4 rounds). The sync
server also serves whenever a plugin supplies server interceptors, which
are sync ``grpc.ServerInterceptor``s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2

from stigmer_core.application import Application
from stigmer_core.async_calls import LoopThread, ReadBound
from stigmer_core.call_limit import CallLimit
from stigmer_core.controller import inline_streams, log_refusal, queued_writes, unary_reads
from stigmer_core.health_checks import Health, end_async_watches, health_handlers
from stigmer_core.open_streams import OpenStreams
from stigmer_core.reflection import SETTING as REFLECTION_SETTING
from stigmer_core.reflection import reflection_handlers
from stigmer_core.request_read import Admit, ReadDeadlines, authenticated, read_first
from stigmer_core.server_pools import ServerPools
from stigmer_core.store.protocol import BoundsStreamReads, ReportsReachability, SubmitsWrites

if TYPE_CHECKING:
    from stigmer_core.metrics import Metrics

MAX_MESSAGE_BYTES = 4 << 20
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]



def _reads(app: Application) -> frozenset[str]:
    """The paths of the kinds' methods that only read: their answers may be dropped (``unsent_answers``)."""
    return frozenset(
        path for kind in app.registry.kinds for path, binding in kind.methods.items() if not binding.pipeline.writes
    )

class ClientFaults(logging.Filter):
    """grpc logs at ERROR what is a client's doing, not the daemon's: such a record is logged at
    DEBUG instead, without its traceback. Its asyncio server logs "ExecuteBatchError raised in
    core by servicer method" when a message could not be sent because the call's client went
    away (killed, its connection cut): a normal event for a daemon whose runners come and go,
    which paged whoever alerts on ERROR. Its metadata decoding logs "Invalid encoding on …" with
    a traceback for a header value that is not UTF-8, before any token is read: 28 KB of log per
    call, which anyone could send to fill the disk."""

    _SAID = ("ExecuteBatchError raised in core", "Invalid encoding on ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith(self._SAID):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_CLIENT_FAULTS = ClientFaults()


def _reflection(app: Application, pools: ServerPools, *, asynchronous: bool) -> dict[str, dict[str, Any]]:
    slots = OpenStreams(pools.sizes.reflection_streams, "reflection stream", REFLECTION_SETTING)
    return reflection_handlers([*app.service_names, health.SERVICE_NAME], slots, asynchronous=asynchronous)


def _follow_store(app: Application, set_all: Callable[[int], None]) -> None:
    """Health follows a store that can lose its database (or its schema, to a newer release's
    migration): NOT_SERVING while it cannot serve."""
    store = app.store
    if isinstance(store, ReportsReachability):
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        store.on_reachability(lambda reachable: set_all(serving if reachable else not_serving))


class AsyncServing:
    """grpc's asyncio server on an event loop thread of its own, driven from sync code."""

    def __init__(
        self,
        app: Application,
        pools: ServerPools,
        options: Sequence[tuple[str, Any]] = (),
        metrics: Metrics | None = None,
    ) -> None:
        logging.getLogger("grpc._cython.cygrpc").addFilter(_CLIENT_FAULTS)  # once: a filter is added once
        self.app = app
        self._metrics = metrics
        self.pools = pools
        self._options = [*OPTIONS, *options]
        self._loop = LoopThread()
        try:
            self._server, self._health = self._loop.run(self._build())
        except BaseException:
            self._loop.close()
            raise

    async def _build(self) -> tuple[aio.Server, Health]:
        """Built on its loop: grpc binds an asyncio server to the loop it is made on."""
        app, pools = self.app, self.pools
        server = aio.server(pools.default, options=self._options)
        reads = unary_reads(app.registry, on_loop=pools.reads is None)
        store = app.store
        # A stream reads as a read does, and waits its turn at the log only on a database
        inline = pools.reads is None and not isinstance(store, BoundsStreamReads)
        streams = inline_streams(app.registry) if inline else frozenset()
        queued = queued_writes(app.executor, store) if isinstance(store, SubmitsWrites) else {}
        admit = authenticated(app.authenticator, log_refusal)
        sizes = pools.sizes
        # One bound for the whole server (one sweep of the loop). An unread call holds no thread
        # here, only what its client sent of its message, so one principal's share of them
        # (``call_limit``) is kept only when the setting asks for one: counted past its grace, a
        # client's large requests sharing a link count as surely as stalled ones, and on this
        # server nothing else bounds how many of those it may have in flight.
        share, org_share = sizes.unread_calls_per_caller, sizes.unread_calls_per_org
        limit = None
        caller_share = share if share is not None else org_share
        if admit is not None and caller_share is not None:
            limit = CallLimit(caller_share, "the daemon", org_share)
        bound = self.read_bound = ReadBound(sizes.request_read_seconds, sizes.unread_grace_seconds, limit)
        answers = sizes.unsent_answers() if admit is not None else None
        if answers is not None:
            answers.reads = _reads(app)
        for service, methods in app.services.items():
            routed = pools.route(service, methods, reads, queued, bound, admit, streams, answers)
            if self._metrics is not None:
                counted = self._metrics.counted_async
                routed = {name: counted(f"/{service}/{name}", handler) for name, handler in routed.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, routed),))
        # Not a kind's servicer: grpc's own health service (grpcio-health-checking), its
        # handlers built as the library's own registration builds them (``health_checks``).
        checks = Health(sizes.health_watches)
        own = {
            health.SERVICE_NAME: health_handlers(checks, asynchronous=True),
            **_reflection(app, pools, asynchronous=True),
        }
        for service, methods in own.items():  # on the loop: they hold no thread
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        return server, checks

    def add_port(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        if credentials is not None:
            return int(self._server.add_secure_port(address, credentials))
        return int(self._server.add_insecure_port(address))

    def start(self) -> None:
        self._loop.run(self._start())

    async def _start(self) -> None:
        await self._server.start()
        self._set_all(health_pb2.HealthCheckResponse.SERVING)
        _follow_store(self.app, self._set_all)  # from the store's thread: ``Health`` takes it from any

    def _set_all(self, status: int) -> None:
        for name in ("", *self.app.service_names):
            self._health.set(name, status)

    def drain(self) -> None:
        self._health.enter_graceful_shutdown()

    def stop(self, grace: float | None) -> None:
        if self._loop.loop.is_closed():
            return
        self._health.enter_graceful_shutdown()
        self._loop.run(end_async_watches(self._health))  # told NOT_SERVING: nothing more to wait for
        stopped = self._loop.submit(self._server.stop(grace))
        self.app.events.end_streams()
        stopped.result()
        self.close()

    def wait(self, timeout: float | None) -> bool:
        return bool(self._loop.run(self._server.wait_for_termination(timeout)))

    def close(self) -> None:
        self._health.close()
        self._loop.close()


class SyncServing:
    """grpc's sync server: every call on a pool thread (``ServerPools.route_sync``), each unary
    call and server stream admitted and its message read under a bound first (``request_read``)."""

    def __init__(
        self,
        app: Application,
        pools: ServerPools,
        interceptors: Sequence[grpc.ServerInterceptor],
        options: Sequence[tuple[str, Any]] = (),
        metrics: Metrics | None = None,
    ) -> None:
        logging.getLogger("grpc._cython.cygrpc").addFilter(_CLIENT_FAULTS)  # once: a filter is added once
        self.app = app
        self._metrics = metrics
        self._deadlines = ReadDeadlines(pools.sizes.request_read_seconds, pools.sizes.unread_grace_seconds)
        admit = authenticated(app.authenticator, log_refusal)
        self._answers = pools.sizes.unsent_answers()
        self._answers.reads = _reads(app)
        # Health and reflection answer without a token; every other service needs one when
        # the server requires tokens.
        self._admits: dict[str, Admit | None] = {service: admit for service in app.services}
        self._default_pool = pools.default
        # With a plugin's interceptors the handlers are made to read first after them
        # (``_ReadFirst``), so an interceptor sees each handler as its kind declared it.
        convert = not interceptors
        chain = [_ReadFirst(self._read_first), *interceptors] if interceptors else []
        self._server = grpc.server(pools.default, interceptors=chain, options=[*OPTIONS, *options])
        reads = unary_reads(app.registry)
        sizes = pools.sizes
        self._limits = {
            id(pools.default): sizes.unread_limit(sizes.rpc_threads, "the daemon's rpc threads"),
            id(pools.sync_reads()): sizes.unread_limit(sizes.read_pool_threads(), "the daemon's read threads"),
            id(pools.streams): sizes.unread_limit(pools.stream_threads, "the daemon's stream threads"),
        }
        """A caller's share of the pool a call runs on, by the pool's id (``call_limit``)."""
        for service, methods in app.services.items():
            routed = pools.route_sync(service, methods, reads)
            self._server.add_registered_method_handlers(service, self._converted(service, routed, convert))
        # Not a kind's servicer: grpc's own health service (grpcio-health-checking), its
        # handlers built as the library's own registration builds them (``health_checks``).
        # Health and reflection answer without a token: each runs on a pool of its own, so
        # idle reflection streams cannot take the threads writes and health checks need.
        self._health = Health(pools.sizes.health_watches)
        checks = pools.on_pool(health_handlers(self._health, asynchronous=False), pools.health)
        self._server.add_registered_method_handlers(
            health.SERVICE_NAME, self._converted(health.SERVICE_NAME, checks, convert)
        )
        for service, methods in _reflection(app, pools, asynchronous=False).items():
            self._server.add_registered_method_handlers(service, pools.on_pool(methods, pools.reflection))

    def _read_first(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service = method[1:].split("/", 1)[0]
        admit = self._admits.get(service)
        # Where grpc will run it: a behavior without a pool of its own runs on the server's.
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
        pool = getattr(behavior, "experimental_thread_pool", None) or self._default_pool
        converted = read_first(method, handler, self._deadlines, admit, self._limits.get(id(pool)), self._answers)
        if self._metrics is None or service not in self._admits:  # health and reflection go uncounted
            return converted
        return self._metrics.counted(method, converted)

    def _converted(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler], convert: bool
    ) -> dict[str, grpc.RpcMethodHandler]:
        if not convert:
            return handlers
        return {name: self._read_first(f"/{service}/{name}", handler) for name, handler in handlers.items()}

    def add_port(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        if credentials is not None:
            return int(self._server.add_secure_port(address, credentials))
        return int(self._server.add_insecure_port(address))

    def start(self) -> None:
        self._server.start()
        self._set_all(health_pb2.HealthCheckResponse.SERVING)
        _follow_store(self.app, self._set_all)

    def _set_all(self, status: int) -> None:
        for name in ("", *self.app.service_names):
            self._health.set(name, status)

    def drain(self) -> None:
        self._health.enter_graceful_shutdown()

    def stop(self, grace: float | None) -> None:
        self._health.enter_graceful_shutdown()
        self._health.end_watches()  # told NOT_SERVING: nothing more to wait for
        stopped = self._server.stop(grace)
        self.app.events.end_streams()
        stopped.wait()
        self._deadlines.close()
        self._health.close()

    def wait(self, timeout: float | None) -> bool:
        return bool(self._server.wait_for_termination(timeout))

    def close(self) -> None:
        self._server.stop(None)
        self._deadlines.close()
        self._health.close()


class _ReadFirst(grpc.ServerInterceptor):
    """First of a plugin's interceptors: the handler the others settle on reads first."""

    def __init__(self, convert: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]) -> None:
        self._convert = convert

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._convert(handler_call_details.method, handler)


Serving = AsyncServing | SyncServing
__all__ = ["MAX_MESSAGE_BYTES", "AsyncServing", "Serving", "SyncServing"]
