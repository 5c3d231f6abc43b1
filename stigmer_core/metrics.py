"""A daemon's Prometheus metrics: what a team running the server watches it by.

Off unless asked for (``stigmer serve --metrics-address``). A daemon with them
wraps each kind's handlers once, as they are registered, so one without them
pays nothing per call. The call metrics take the names and labels of
go-grpc-prometheus (``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_handling_seconds``, ``grpc_server_msg_sent_total``), so dashboards
and alerts written for gRPC servers read them as they are. Labels are the
method's service, name and type and the call's status code: never an org, a
principal or an object, which an endpoint answering without a token must not
tell. What the store and its database connections are doing is read when the
endpoint is scraped, not kept up per call.

A call counts once it reached a kind's handler: refused for its token, for its
caller's share of calls or streams, for its message, or answered. Health checks
and reflection are not counted (what a team server's health follows, its
database answering, is a gauge).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import __version__ as protobuf_version
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stigmer_core.auth.transport import listen_address_problem, split_address
from stigmer_core.errors import AddressUnavailable
from stigmer_core.metrics_endpoint import Endpoint
from stigmer_core.request_read import read_timeout
from stigmer_core.store.protocol import (
    CountsCommits,
    EventLogStats,
    ReportsEventLog,
    ReportsPool,
    ReportsReachability,
    ReportsSchemaVersion,
)

UNARY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a get on LMDB takes tens of µs, a write waits for its commit's sync (about a ms),
and a call waiting on an unanswering database is given up after 5 s by default."""

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_ATTRIBUTES = ("experimental_thread_pool", "experimental_non_blocking")
"""What grpc's sync server reads off a behavior (``server_pools``): a wrapper carries them on."""


def _gone(context: Any, ended: bool) -> grpc.StatusCode | None:
    """Why a call's client no longer waits for its answer (``ended``: the call is over without
    one), or None while it does."""
    if not ended:
        return None
    remaining = context.time_remaining()
    return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED


def _code(found: Any, failed: BaseException | None, gone: grpc.StatusCode | None) -> grpc.StatusCode:
    """The status a call ended with, from what its context holds (a StatusCode on grpc's sync
    server, a StatusCode or its number on the asyncio one), how the handler ended, and whether
    its client had gone before it was answered (``_gone``)."""
    if isinstance(found, grpc.StatusCode):
        code = found
    elif isinstance(found, int):
        code = _CODES.get(found, grpc.StatusCode.UNKNOWN)
    else:
        code = grpc.StatusCode.OK
    if code is not grpc.StatusCode.OK:
        return code
    if gone is not None:
        return gone  # a stream's handler that saw its client go returns as if it were done
    if isinstance(failed, GeneratorExit | asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    if failed is not None:
        return grpc.StatusCode.UNKNOWN  # what grpc answers for an exception no abort named
    return code


class _Method:
    """One method's series, resolved once: a call increments children, never looks up labels."""

    __slots__ = ("_handled", "_labels", "handled", "seconds", "sent", "started")

    def __init__(self, metrics: Metrics, path: str, streaming: bool) -> None:
        service, _, name = path[1:].partition("/")
        self._labels = ("server_stream" if streaming else "unary", service, name)
        self._handled = metrics.handled
        self.started = metrics.started.labels(*self._labels)
        self.seconds = None if streaming else metrics.seconds.labels(*self._labels)
        # streams only: a unary method's series would stay 0 (its answer is not counted here),
        # and a dashboard dividing by it would read that as nothing sent
        self.sent = metrics.sent.labels(*self._labels) if streaming else None
        self.handled: dict[grpc.StatusCode, Any] = {}
        self.count(grpc.StatusCode.OK, 0)  # listed from the start, so a rate over it has a start

    def opened(self, streams: Gauge | None = None) -> float:
        """A call begins (a stream, when ``streams`` is given); when, for ``ended``."""
        self.started.inc()
        if streams is not None:
            streams.inc()
        return time.perf_counter()

    def ended(
        self,
        began: float,
        found: Any,
        failed: BaseException | None,
        gone: grpc.StatusCode | None,
        streams: Gauge | None = None,
    ) -> None:
        """A call is over (``_code`` says how); a unary call's seconds are observed, a stream's slot closed."""
        self.count(_code(found, failed, gone))
        if streams is not None:
            streams.dec()
        elif self.seconds is not None:
            self.seconds.observe(time.perf_counter() - began)

    def count(self, code: grpc.StatusCode, calls: int = 1) -> None:
        child = self.handled.get(code)
        if child is None:  # two threads may both make it: prometheus_client hands both the same child
            child = self.handled[code] = self._handled.labels(*self._labels, code.name)
        child.inc(calls)


class Metrics:
    """A daemon's metrics registry, the wrappers that count its calls, and its HTTP endpoint."""

    def __init__(self, store: object, releases: Mapping[str, str] | None = None) -> None:
        """``releases``: each kind served, by name, with the plugin release serving it ("" for none),
        so a rolling upgrade shows which daemon serves which release (``stigmer_kind_info``)."""
        # A ``_created`` series beside each counter would double them, for no use here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("grpc_type", "grpc_service", "grpc_method")
        registry = self.registry
        self.started = Counter("grpc_server_started", "Calls begun on the server.", labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled", "Calls ended, by status code.", (*labels, "grpc_code"), registry=registry
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from a unary call's start to its answer.",
            labels,
            buckets=UNARY_BUCKETS,
            registry=registry,
        )
        self.sent = Counter("grpc_server_msg_sent", "Messages sent on server streams.", labels, registry=registry)
        self.streams = Gauge("stigmer_streams_open", "Server streams (watches, subscribes) open.", registry=registry)
        ProcessCollector(registry=registry)
        Info("stigmer_build", "What this daemon runs on.", registry=registry).info(_build())
        kinds = Info(
            "stigmer_kind", "Each kind this daemon serves, and its plugin's release.", ["kind"], registry=registry
        )
        for kind, release in (releases or {}).items():
            kinds.labels(kind=kind).info({"release": release})
        registry.register(_StoreCollector(store))
        self._tls_expiry: Gauge | None = None
        self._methods: dict[str, _Method] = {}
        self._http: Any = None
        self.address = ""

    def tls_served(self, until: datetime.datetime | None) -> None:
        """The expiry of the certificate a TLS daemon serves to new connections, now and at each
        renewal taken (``TlsFiles.server_credentials``): an alert on it fires before clients refuse
        the certificate, whether or not a renewal arrived. Absent without TLS."""
        if self._tls_expiry is None:
            self._tls_expiry = Gauge(
                "stigmer_tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate served to new connections expires (Unix time; 0: its dates cannot be read).",
                registry=self.registry,
            )
        self._tls_expiry.set(until.timestamp() if until is not None else 0)

    def _method(self, path: str, streaming: bool) -> _Method:
        found = self._methods.get(path)
        if found is None:
            found = self._methods[path] = _Method(self, path, streaming)
        return found

    # -- grpc's sync server -------------------------------------------------------
    def counted(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` (as grpc's sync server runs it) counting its calls."""
        field = _field(handler)
        behavior = getattr(handler, field)
        if getattr(behavior, "experimental_non_blocking", False):
            return handler  # it answers later, through a callback: none of the framework's do
        method = self._method(path, handler.response_streaming)
        wrapped = (
            _sync_stream(behavior, method, self.streams)
            if handler.response_streaming
            else _sync_unary(behavior, method)
        )
        for name in _ATTRIBUTES:
            if hasattr(behavior, name):
                setattr(wrapped, name, getattr(behavior, name))
        return handler._replace(**{field: wrapped})

    # -- grpc's asyncio server ------------------------------------------------------
    def counted_async(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` (an asyncio server's, as ``ServerPools.route`` makes it) counting its calls."""
        field = _field(handler)
        behavior = getattr(handler, field)
        method = self._method(path, handler.response_streaming)
        if handler.response_streaming:
            return handler._replace(**{field: _async_stream(behavior, method, self.streams)})
        return handler._replace(**{field: _async_unary(behavior, method)})

    # -- the endpoint ---------------------------------------------------------------
    def serve(self, address: str) -> str:
        """Serve ``/metrics`` over HTTP on ``address`` (``HOST:PORT``; port 0 picks one); the
        address it listens on.

        Connections wait on one thread as coroutines (``metrics_endpoint``): the endpoint asks
        for no token, so however many connections reach it, they never hold the daemon's calls,
        and one that has not sent its request within ``STIGMER_REQUEST_READ_TIMEOUT`` is dropped."""
        problem = listen_address_problem(address)
        if problem is not None:
            raise AddressUnavailable(f"cannot serve metrics on {address!r}: {problem}")
        host, port = split_address(address)
        endpoint = Endpoint(self.registry, read_timeout())
        try:
            family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            bound = endpoint.start(host, int(port), family)
        except OSError as exc:
            endpoint.close()
            said = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio words the bind's error its own way
            raise AddressUnavailable(f"cannot serve metrics on {address}: {said}") from None
        self._http = endpoint
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        return self.address

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()


def counted_behaviors(
    metrics: Metrics, path: str
) -> tuple[Callable[[Callable[..., Any]], Callable[..., Any]], Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The wrappers a unary behavior of ``path`` gets on grpc's sync server and on its asyncio one,
    as functions of the behavior: what the benchmark times a counted call's cost by."""
    method = metrics._method(path, False)
    return (lambda behavior: _sync_unary(behavior, method)), (lambda behavior: _async_unary(behavior, method))


def _field(handler: grpc.RpcMethodHandler) -> str:
    return next(f for f in ("stream_unary", "stream_stream", "unary_unary", "unary_stream") if getattr(handler, f))


def _sync_unary(behavior: Callable[..., Any], method: _Method) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        began = method.opened()
        try:
            answer = behavior(request, context)
        except BaseException as failed:
            method.ended(began, context.code(), failed, _gone(context, not context.is_active()))
            raise
        method.ended(began, context.code(), None, _gone(context, not context.is_active()))
        return answer

    return unary


def _sync_stream(behavior: Callable[..., Any], method: _Method, streams: Gauge) -> Callable[..., Any]:
    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        began, failed, sent = method.opened(streams), None, method.sent
        assert sent is not None  # a stream's method counts its messages
        try:
            answers: Iterable[Any] | None = behavior(request, context)
            for answer in answers or ():
                sent.inc()
                yield answer
        except BaseException as exc:
            failed = exc
            raise
        finally:
            method.ended(began, context.code(), failed, _gone(context, not context.is_active()), streams)

    return stream


def _async_unary(behavior: Callable[..., Any], method: _Method) -> Callable[..., Any]:
    async def unary(requests: Any, context: Any) -> Any:
        began = method.opened()
        try:
            answer = await behavior(requests, context)
        except BaseException as failed:
            method.ended(began, context.code(), failed, _gone(context, context.cancelled()))
            raise
        method.ended(began, context.code(), None, _gone(context, context.cancelled()))
        return answer

    return unary


def _async_stream(behavior: Callable[..., Any], method: _Method, streams: Gauge) -> Callable[..., Any]:
    async def stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        began, failed, sent = method.opened(streams), None, method.sent
        assert sent is not None  # a stream's method counts its messages
        answers = behavior(requests, context)
        try:
            async for answer in answers:
                sent.inc()
                yield answer
        except BaseException as exc:
            failed = exc
            raise
        finally:
            method.ended(began, context.code(), failed, _gone(context, context.cancelled()), streams)
            await answers.aclose()  # its own cleanup (the stream's slot) now, not when collected

    return stream


def _build() -> dict[str, str]:
    from stigmer_core import __version__

    return {
        "version": __version__,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
    }


class _StoreCollector(Collector):
    """The store's figures, read at each scrape from what the store keeps anyway (no I/O)."""

    def __init__(self, store: object) -> None:
        self._store = store
        self._reachable: list[bool] = [True]
        if isinstance(store, ReportsReachability):
            store.on_reachability(self._reached)

    def _reached(self, reachable: bool) -> None:
        self._reachable[0] = reachable

    def collect(self) -> Iterator[Metric]:
        store = self._store
        if isinstance(store, CountsCommits):
            yield CounterMetricFamily(
                "stigmer_store_commits",
                "Write transactions the store committed (each holds one or more calls' writes).",
                value=store.commits,
            )
        if isinstance(store, ReportsReachability):
            yield GaugeMetricFamily(
                "stigmer_store_reachable",
                "1 while this daemon's health is SERVING on its database: the database answers, and its "
                "schema is one this release serves (0 too while a newer release's schema is seen).",
                value=1 if self._reachable[0] else 0,
            )
        if isinstance(store, ReportsSchemaVersion):
            seen, known = store.schema_versions()
            yield GaugeMetricFamily(
                "stigmer_store_schema_version",
                "The database schema's version as this daemon last read it (0 before its first read).",
                value=seen,
            )
            yield GaugeMetricFamily(
                "stigmer_store_schema_version_known",
                "The newest schema version this daemon's release serves: a schema past it was migrated by a "
                "newer release, and this daemon reports NOT_SERVING until restarted on one.",
                value=known,
            )
        if isinstance(store, ReportsEventLog):
            yield from _event_log(store.event_log_stats())
        if isinstance(store, ReportsPool):
            pool = store.pool_stats()
            yield GaugeMetricFamily(
                "stigmer_database_connections", "Connections of this daemon's pool, open.", value=pool.size
            )
            yield GaugeMetricFamily(
                "stigmer_database_connections_idle",
                "Connections of this daemon's pool, open and not lent out.",
                value=pool.idle,
            )
            yield GaugeMetricFamily(
                "stigmer_database_connections_max", "Most connections the pool may open (pool_max).", value=pool.max
            )
            yield GaugeMetricFamily(
                "stigmer_database_requests_waiting", "Calls waiting for a connection of the pool.", value=pool.waiting
            )


def _event_log(log: EventLogStats) -> Iterator[Metric]:
    """The log's fill beside its bounds: a log at a bound is pruned, so ``revision - compacted``
    is how far back a runner's watch can resume; one resuming from before it ends ABORTED."""
    figures = (
        (
            "stigmer_store_revision",
            "The newest revision committed to the store, as this daemon knows it.",
            log.revision,
        ),
        ("stigmer_event_log_revisions", "Revisions the event log holds, every org's together.", log.revisions),
        ("stigmer_event_log_bytes", "Bytes of events the event log holds.", log.bytes),
        (
            "stigmer_event_log_compacted_revision",
            "The newest revision pruned from the event log: a watch resuming from it or before ends ABORTED.",
            log.compacted,
        ),
        (
            "stigmer_event_log_max_revisions",
            "Revisions the event log keeps at most (retention).",
            log.retention.max_revisions,
        ),
        (
            "stigmer_event_log_max_bytes",
            "Bytes of events the event log keeps at most (retention).",
            log.retention.max_bytes,
        ),
        (
            "stigmer_event_log_max_age_seconds",
            "Seconds an event is kept at most (retention): older ones are pruned.",
            log.retention.max_age_seconds,
        ),
    )
    for name, documentation, value in figures:
        yield GaugeMetricFamily(name, documentation, value=value)


__all__ = ["UNARY_BUCKETS", "Metrics", "counted_behaviors"]
