"""The generic controller factory: rpc method -> operation -> pipeline.

For every method of every kind's Command and Query services it builds one
``grpc.RpcMethodHandler`` from the compiled binding. There is no servicer
class and no handler function per kind; both the network server and the
in-process channel serve exactly these handlers.

Server streams (a kind's own, like ``subscribe``, and the generic
``stigmer.commons.watch.v1.Watch`` that serves every kind's ``watch``) are
admitted through one ``StreamLimit``: past it a new stream gets
RESOURCE_EXHAUSTED at once, so open streams never hold every worker a unary
call needs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc import aio

from stigmer_core import interrupts, status
from stigmer_core.api.commons.watch.v1 import watch_pb2
from stigmer_core.async_calls import wakeups_of
from stigmer_core.auth.access import LOCAL_ADMIN, Caller
from stigmer_core.auth.tokens import KIND as TOKEN_KIND
from stigmer_core.auth.tokens import Authenticator, TokenRefused
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    OrgNotVisible,
    PermissionDenied,
    PluginFault,
    ResourceExhausted,
    Unauthenticated,
)
from stigmer_core.headers import dry_run as asks_dry_run
from stigmer_core.headers import removed_trailers
from stigmer_core.kinds.resources import Resources
from stigmer_core.kinds.runtime import KindRuntime, MethodBinding, Registry
from stigmer_core.limits import MESSAGE_BYTES
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.events import EventHub, Idle, StreamLimit
from stigmer_core.pipeline.step import Step, plugin_fault, run_steps
from stigmer_core.pipeline.watch import WATCH_OPERATION, WATCH_PATH, WATCH_SERVICE
from stigmer_core.store.protocol import RehearsesWrites, SnapshotMoved, Store, SubmitsWrites, WriteTxn

log = logging.getLogger(__name__)


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying the answer it would have had."""

    def __init__(self, response: Any) -> None:
        super().__init__("dry run")
        self.response = response


class Executor:
    """Runs one binding's pipeline for one request, as the caller its metadata authenticates."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        authenticator: Authenticator | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.authenticator = authenticator
        self.events = events
        self._rehearse = store.rehearse if isinstance(store, RehearsesWrites) else None
        """How a dry run is run where a write orders every other one (``RehearsesWrites``)."""

    def caller(
        self, binding: MethodBinding, metadata: Sequence[tuple[str, Any]], peer: str, kind: KindRuntime | None = None
    ) -> Caller:
        """Who calls, and that its roles allow the method somewhere, before any step runs,
        so a caller without the right learns nothing (not even what a valid request looks like).
        ``kind``: the one the call is of, named in a refusal (the one Watch method serves every kind)."""
        auth = self.authenticator
        if auth is None or (not metadata and not auth.required):
            return LOCAL_ADMIN  # the local path's common case, without a look at anything
        caller = auth.caller(metadata, peer)
        if not caller.can_anywhere(binding.access):
            roles = ", ".join(f"{role} in {org}" for org, role in caller.roles.items()) or "no role"
            of = f" of {kind.name}" if kind is not None and binding.path == WATCH_PATH else ""
            raise PermissionDenied(
                f"{caller.principal} ({roles}) lacks {binding.access.value} access for {binding.path}{of}",
                metadata={"access": binding.access.value, "method": binding.path, "kind": kind.name if kind else ""},
            )
        return caller

    def start(
        self,
        kind: KindRuntime,
        binding: MethodBinding,
        request: Message,
        metadata: Sequence[tuple[str, Any]],
        active: Callable[[], bool] | None,
        peer: str,
        yields_idle: bool = False,
        on_end: Callable[[Callable[[], None]], object] | None = None,
    ) -> RequestContext:
        """Authenticate, and run the steps before the transaction."""
        caller = self.caller(binding, metadata, peer, kind)
        ctx = RequestContext(
            kind=kind,
            registry=self.registry,
            operation=binding.operation,
            request=request,
            metadata=metadata,
            engine=self.store,
            events=self.events,
            principal=caller.principal,
            caller=caller,
            access=binding.access,
            yields_idle=yields_idle,
            on_end=on_end,
        )
        if active is not None:
            ctx.active = active
        pipeline = binding.pipeline
        run_steps(pipeline.pre, pipeline.run_pre, ctx, pipeline.pre_plugins)
        return ctx

    def write_body(
        self, ctx: RequestContext, binding: MethodBinding, removed: list[str] | None
    ) -> Callable[[WriteTxn], Any]:
        """The function a write's transaction runs: the transactional steps, in a fresh context each try."""
        metadata = ctx.metadata
        dry_run = asks_dry_run(metadata)
        caller = ctx.caller
        pipeline = binding.pipeline
        steps, run_txn, plugins = pipeline.txn, pipeline.run_txn, pipeline.txn_plugins

        def body(txn: WriteTxn) -> Any:
            ctx.reset_transaction_state()
            ctx.operation = binding.operation
            ctx.resources = resources = Resources(txn, self.registry, caller=caller, access=binding.access)
            if dry_run:
                resources.published = []  # kept, to name what else it would have made
            run_steps(steps, run_txn, ctx, plugins)
            resources.publish()  # whatever a custom pipeline wrote without a publish step
            _check_response(ctx.response, binding, ctx.kind)
            _check_answerable(ctx.response, binding)
            if removed is not None:
                removed[:] = [
                    f"{k.name} {o.metadata.id} {o.metadata.slug}"  # type: ignore[attr-defined]
                    for k, o in resources.removed
                ]
                if dry_run:  # what else it would have made, for a client dry-running what names it
                    removed.extend(resources.created_besides(ctx.response))
            if resources.removed and self.authenticator is not None:
                self._forget_removed_tokens(txn, resources.removed, self.authenticator)
            if dry_run:
                raise _DryRun(ctx.response)
            return ctx.response

        return body

    @staticmethod
    def _forget_removed_tokens(txn: WriteTxn, removed: list[tuple[KindRuntime, Any]], auth: Authenticator) -> None:
        """A token deleted by this write is refused by this server once the write commits: the
        ApiToken kind's own delete forgot it, but one deleted with its owner (a cascade runs no
        steps of the owned kind) was taken for the token cache's 5 s, long enough to make others."""
        for kind, obj in removed:
            if kind.name == TOKEN_KIND:
                txn.on_commit(partial(auth.forget, obj.status.token_digest))

    def read(self, ctx: RequestContext, binding: MethodBinding) -> Any:
        # A unary read is answered inside the snapshot and can start over, so the engine
        # may answer it without a transaction; a stream keeps its snapshot while it sends.
        restartable = not binding.server_streaming
        if binding.server_streaming and self.events is not None:
            self.events.start()  # before the snapshot a stream from now starts at (``EventHub.start``)
        while True:
            try:
                with self.store.read(restartable=restartable) as txn:
                    ctx.resources = Resources(
                        txn, self.registry, caller=ctx.caller, access=binding.access, read_only=binding.operation
                    )
                    pipeline = binding.pipeline
                    run_steps(pipeline.txn, pipeline.run_txn, ctx, pipeline.txn_plugins)
                    return ctx.response
            except SnapshotMoved:
                if not restartable:
                    raise
                ctx.reset_transaction_state()
                restartable = False  # read again, in one transaction this time

    def run(
        self,
        kind: KindRuntime,
        binding: MethodBinding,
        request: Message,
        metadata: Sequence[tuple[str, Any]] = (),
        active: Callable[[], bool] | None = None,
        peer: str = "",
        removed: list[str] | None = None,
        yields_idle: bool = False,
        on_end: Callable[[Callable[[], None]], object] | None = None,
    ) -> Any:
        """``removed`` (when given) receives the objects the write deleted, as ``REMOVED`` entries;
        ``yields_idle``: a stream's driver waits itself (``RequestContext.yields_idle``);
        ``on_end``: the call's ``add_callback`` (``RequestContext.on_end``)."""
        try:
            ctx = self.start(kind, binding, request, metadata, active, peer, yields_idle, on_end)
            if binding.pipeline.writes:
                _check_still_wanted(ctx)
                rehearse = self._rehearse
                run = self.store.transact if rehearse is None or not asks_dry_run(metadata) else rehearse
                try:
                    response = run(self.write_body(ctx, binding, removed))
                except _DryRun as done:
                    response = done.response
            else:
                response = self.read(ctx, binding)
        except (Unauthenticated, PermissionDenied, OrgNotVisible) as denied:
            self.log_denied(denied, binding, metadata, peer)
            raise
        return _answered(response, binding, kind)

    async def run_queued(
        self,
        store: SubmitsWrites,
        kind: KindRuntime,
        binding: MethodBinding,
        request: Message,
        metadata: Sequence[tuple[str, Any]],
        peer: str,
        removed: list[str] | None,
        active: Callable[[], bool] | None = None,
    ) -> Any:
        """``run`` for a write, from an event loop: the write is queued for a group commit and
        awaited, with no thread waiting for it."""
        try:
            ctx = self.start(kind, binding, request, metadata, active, peer)
            _check_still_wanted(ctx)
            if self._rehearse is not None and asks_dry_run(metadata):  # seldom: on a thread, off the loop
                try:
                    response = await asyncio.to_thread(self._rehearse, self.write_body(ctx, binding, removed))
                except _DryRun as done:
                    response = done.response
                return _answered(response, binding, kind)
            loop = asyncio.get_running_loop()
            wakeups = wakeups_of(loop)  # the loop's one: a batch's writes and the streams it wakes, one wake-up
            answered: asyncio.Future[None] = loop.create_future()
            pending = store.submit(self.write_body(ctx, binding, removed), partial(wakeups.resolve, answered))
            await answered
            if isinstance(pending.error, _DryRun):
                response = pending.error.response
            elif pending.error is not None:
                raise pending.error
            else:
                response = pending.result  # its on_commit callbacks ran on the committer thread
        except (Unauthenticated, PermissionDenied, OrgNotVisible) as denied:
            self.log_denied(denied, binding, metadata, peer)
            raise
        return _answered(response, binding, kind)

    def log_denied(
        self,
        denied: Unauthenticated | PermissionDenied | OrgNotVisible,
        binding: MethodBinding,
        metadata: Sequence[tuple[str, Any]],
        peer: str,
    ) -> None:
        log_refusal(self.authenticator, denied, binding.path, metadata, peer)


def log_refusal(
    authenticator: Authenticator | None,
    denied: Unauthenticated | PermissionDenied | OrgNotVisible,
    path: str,
    metadata: Sequence[tuple[str, Any]],
    peer: str,
) -> None:
    """The one line a refused call logs (a kind rpc's, or ``whoami``'s): never the request, since
    a token or a secret may be in it. Refusals alike (one principal, method and status; an
    anonymous caller's by its address) are written once per ``STIGMER_DENIED_LOG_SECONDS``, the
    next line telling how many were left out (``denied_log``)."""
    principal = _principal_of(metadata, peer, authenticator)
    code = status.code_of(denied).name
    alike = f"(anonymous {_host(peer)})" if principal.startswith("(anonymous ") else principal
    sink = authenticator.denied_log if authenticator is not None else None
    left_out = sink.admit((alike, path, code)) if sink is not None else 0
    if left_out is None:
        return
    more = f" (and {left_out:,} more like it in the last {sink.seconds:g} s)" if left_out and sink else ""
    # the same as fields of their own, which a JSON log (--log-format json) writes beside the message
    fields = {"principal": principal, "method": path, "status": code, "peer": peer or "-", "left_out": left_out}
    log.warning(
        "denied: principal=%s method=%s status=%s peer=%s%s", principal, path, code, peer or "-", more, extra=fields
    )


def peer_of(context: Any, metadata: Sequence[tuple[str, Any]], needs_peer: bool) -> str:
    """Who is on the other end, asked only where it matters: on a server that requires tokens,
    and for a call carrying one (refused when not valid on the local paths, the in-process
    channel and the daemon's Unix socket, and ignored over the network: ``tokens.Authenticator``)."""
    if needs_peer:
        return str(context.peer())
    for key, _ in metadata:
        if key == "authorization":
            return str(context.peer())
    return ""


def _host(peer: str) -> str:
    """A peer without its port (``ipv4:10.0.0.5:51234`` -> ``ipv4:10.0.0.5``): each connection has its own."""
    head, sep, port = peer.rpartition(":")
    return head if sep and port.isdigit() else peer


def _check_still_wanted(ctx: RequestContext) -> None:
    """Refuse to begin a write whose call already ended: its client was told DEADLINE_EXCEEDED
    (or cancelled it) and may retry, which would then meet this write, committed unanswered."""
    if not ctx.active():
        raise DeadlineExceeded(
            f"the call ended (its deadline passed or it was cancelled) before its {ctx.operation} began; "
            "nothing was written"
        )


def _answered(response: Any, binding: MethodBinding, kind: KindRuntime) -> Any:
    _check_response(response, binding, kind)
    return _guarded_stream(response, binding, kind) if binding.server_streaming else response


def _check_response(response: Any, binding: MethodBinding, kind: KindRuntime) -> None:
    """A pipeline's answer must be its method's response message (a stream's, messages to send):
    anything else is a plugin's bug, named as one (INTERNAL), never grpc's serializer failing
    on it (UNKNOWN, with Python's words) or, in a write, after its commit."""
    if response is None:
        raise PluginFault(
            f"internal error: the pipeline of {binding.path} produced no response (plugin {kind.plugin!r}: "
            "a step must set ctx.response)"
        )
    cls = binding.response_cls
    if not binding.server_streaming and type(response) is not cls and not isinstance(response, cls):
        raise PluginFault(
            f"internal error: the pipeline of {binding.path} answered a {type(response).__name__} where "
            f"{cls.DESCRIPTOR.full_name} belongs (plugin {kind.plugin!r})"
        )


def _guarded_stream(messages: Any, binding: MethodBinding, kind: KindRuntime) -> Iterator[Any]:
    """A stream's messages, each checked as ``_check_response`` checks a unary answer, and what
    their generator raises answered as a step's fault is (``plugin_fault``): a SystemExit from
    it ended the event loop's thread, and every call of the daemon then hung."""
    cls = binding.response_cls
    try:
        iterator = iter(messages)
    except TypeError:
        raise PluginFault(
            f"internal error: the pipeline of {binding.path} answered a {type(messages).__name__}, not "
            f"messages to stream (plugin {kind.plugin!r})"
        ) from None
    try:
        while True:
            try:
                message = next(iterator)
            except StopIteration:
                return
            except BaseException as exc:
                fault = plugin_fault(exc, f"the stream of {binding.path}", kind.plugin)
                if fault is exc:
                    raise
                raise fault from (exc if isinstance(exc, Exception) else None)
            # bytes: an event sent as serialized; Idle: a wait its driver takes (``RequestContext.yields_idle``)
            if type(message) is not cls and not isinstance(message, cls | bytes | Idle):
                raise PluginFault(
                    f"internal error: the stream of {binding.path} sent a {type(message).__name__} where "
                    f"{cls.DESCRIPTOR.full_name} belongs (plugin {kind.plugin!r})"
                )
            yield message
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _principal_of(metadata: Sequence[tuple[str, Any]], peer: str, authenticator: Authenticator | None) -> str:
    """How a denied call's log line names its caller, without ever printing a token."""
    if authenticator is None:
        return "local"
    try:
        return authenticator.caller(metadata, peer).principal
    except TokenRefused as refused:  # a revoked or expired token: which one, never the token itself
        return f"{refused.principal} ({refused.message.removeprefix('the API token ')})"
    except (Unauthenticated, PermissionDenied) as refused:
        entries = sum(1 for key, _ in metadata if key == "authorization")
        if entries > 1:  # may hold a valid token twice: not one to take for a leaked or unknown token
            return f"({entries} authorization entries)"
        if refused.reason == "TOKEN_MALFORMED":
            return "(malformed token)"
        return "(invalid token)" if entries else f"(anonymous {peer or 'caller'})"


def _check_answerable(response: Any, binding: MethodBinding) -> None:
    """A write whose answer could not be sent is rolled back, never committed unanswered."""
    if isinstance(response, Message) and response.ByteSize() > MESSAGE_BYTES:
        raise ResourceExhausted(
            f"the answer of {binding.path} would take {response.ByteSize()} bytes, more than the "
            f"{MESSAGE_BYTES}-byte message limit; nothing was written",
            reason="MESSAGE_TOO_LARGE",
            metadata={"limit": MESSAGE_BYTES},
        )


def _malformed(binding: MethodBinding, request: Malformed) -> InvalidArgument:
    return refusal(binding.request_cls, request)


def _streamed(
    executor: Executor,
    limit: StreamLimit,
    kind: KindRuntime,
    binding: MethodBinding,
    request: Message,
    context: grpc.ServicerContext,
) -> Iterator[Message]:
    """A server stream's responses, admitted through the stream limit; every failure becomes its status.

    A stream opened with a token asks again before each message whether its caller still
    may (the authenticator's cache answers): a token revoked, deleted or expired while the
    stream was open ends it with UNAUTHENTICATED before anything more is sent, as it would
    refuse the next call. A stream with nothing to send asks too, each time it looks whether
    its client is still there (``StreamSettings.poll_seconds``), so an idle one (a subscribe
    to an execution nobody writes) ends as well and frees its slot.
    """
    try:
        auth = executor.authenticator
        metadata = context.invocation_metadata() or ()
        peer = peer_of(context, metadata, auth is not None and auth.required)
        try:  # who calls, before a slot is taken: a refused caller holds none
            caller = executor.caller(binding, metadata, peer, kind)
        except (Unauthenticated, PermissionDenied) as denied:
            executor.log_denied(denied, binding, metadata, peer)
            raise
        holder = None if caller.unrestricted else caller.principal
        idle = getattr(context, "waits_idle", False)  # the event loop's own driver (async_calls.inline_stream)
        on_end = None if idle else context.add_callback  # a thread waiting for events is woken when the call ends
        limit.acquire(holder, caller.orgs)
        release = _Once(partial(limit.release, holder, caller.orgs))
        context.add_callback(release)  # a cancelled stream frees its slot at once, not at its next look
        try:
            if auth is None or not metadata:
                yield from executor.run(
                    kind, binding, request, metadata, context.is_active, peer, yields_idle=idle, on_end=on_end
                )
                return
            refused: list[Unauthenticated | PermissionDenied] = []

            def still_may() -> None:
                try:
                    executor.caller(binding, metadata, peer, kind)
                except (Unauthenticated, PermissionDenied) as denied:
                    executor.log_denied(denied, binding, metadata, peer)
                    raise

            def active() -> bool:
                if not context.is_active():
                    return False
                try:
                    still_may()
                except (Unauthenticated, PermissionDenied) as denied:
                    refused.append(denied)
                    return False
                return True

            messages = executor.run(kind, binding, request, metadata, active, peer, yields_idle=idle, on_end=on_end)
            try:
                for message in messages:
                    still_may()
                    yield message
                if refused:  # it stopped waiting because its token went bad
                    raise refused[0]
            finally:
                close = getattr(messages, "close", None)
                if close is not None:
                    close()
        finally:
            release()
    except GeneratorExit:  # closed: its caller went away
        raise
    except BaseException as exc:  # a BaseException left to the loop thread would end it
        if isinstance(exc, KeyboardInterrupt) and interrupts.received():  # a person's Ctrl-C, in process
            raise
        status.abort(context, exc)


class _Once:
    """Calls ``fn`` the first time it is called, from whichever thread comes first."""

    __slots__ = ("_fn", "_lock")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn: Callable[[], object] | None = fn
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            fn, self._fn = self._fn, None
        if fn is not None:
            fn()


def _handler(
    executor: Executor, kind: KindRuntime, binding: MethodBinding, limit: StreamLimit
) -> grpc.RpcMethodHandler:
    run = executor.run
    auth = executor.authenticator
    needs_peer = auth is not None and auth.required  # who is on the other end matters only then
    request_deserializer = tolerant(binding.request_cls, executor.registry)
    response_serializer: Callable[[Any], bytes] = binding.response_cls.SerializeToString

    if binding.server_streaming:
        response_serializer = _stream_serializer(binding.response_cls)

        def stream(request: Message | Malformed, context: grpc.ServicerContext) -> Iterator[Message]:
            if isinstance(request, Malformed):
                status.abort(context, _malformed(binding, request))
            yield from _streamed(executor, limit, kind, binding, request, context)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=request_deserializer, response_serializer=response_serializer
        )

    writes = binding.pipeline.writes

    def unary(request: Message | Malformed, context: grpc.ServicerContext) -> Message:
        if isinstance(request, Malformed):
            status.abort(context, _malformed(binding, request))
        removed: list[str] | None = [] if writes else None
        try:
            metadata = context.invocation_metadata() or ()
            peer = peer_of(context, metadata, needs_peer)
            active = context.is_active if writes else None
            response: Message = run(kind, binding, request, metadata, active, peer, removed)
        except Exception as exc:
            status.abort(context, exc)
        if removed:
            context.set_trailing_metadata(removed_trailers(removed))
        return response

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=request_deserializer, response_serializer=response_serializer
    )


def queued_writes(executor: Executor, store: SubmitsWrites) -> dict[str, Callable[..., Any]]:
    """Path -> an aio unary behavior, for every unary rpc that writes: the write is queued on
    ``store``'s group commit from the event loop (``Executor.run_queued``), so a write in flight
    holds no thread. A write whose steps before its transaction are not all the framework's
    runs on the rpc pool instead (``_framework_only``)."""
    auth = executor.authenticator
    needs_peer = auth is not None and auth.required
    found: dict[str, Callable[..., Any]] = {}
    for kind in executor.registry.kinds:
        for path, binding in kind.methods.items():
            if binding.pipeline.writes and not binding.server_streaming and _framework_only(binding.pipeline.pre):
                found[path] = _queued(executor, store, kind, binding, needs_peer)
    return found


def _alive(context: aio.ServicerContext[Any, Any]) -> bool:
    if context.done():
        return False
    remaining = context.time_remaining()
    return remaining is None or remaining > 0


def _queued(
    executor: Executor, store: SubmitsWrites, kind: KindRuntime, binding: MethodBinding, needs_peer: bool
) -> Callable[..., Any]:
    run = executor.run_queued

    async def unary(request: Message | Malformed, context: aio.ServicerContext[Any, Any]) -> Message:
        if isinstance(request, Malformed):
            await status.abort_call(context, _malformed(binding, request))
        removed: list[str] = []
        try:
            metadata = context.invocation_metadata() or ()
            peer = peer_of(context, metadata, needs_peer)
            response: Message = await run(
                store, kind, binding, request, metadata, peer, removed, partial(_alive, context)
            )
        except Exception as exc:
            await status.abort_call(context, exc)
        if removed:
            context.set_trailing_metadata(removed_trailers(removed))
        return response

    return unary


def _stream_serializer(response_cls: type[Message]) -> Callable[[Message | bytes], bytes]:
    """A stream's serializer: a message it is given, or bytes as they are (an event's message
    serialized once and sent by every stream that sends it; ``pipeline.watch``)."""
    serialize = response_cls.SerializeToString

    def serializer(message: Message | bytes) -> bytes:
        return message if message.__class__ is bytes else serialize(message)  # type: ignore[arg-type]

    return serializer


def _watch_handler(executor: Executor, limit: StreamLimit) -> grpc.RpcMethodHandler:
    """``stigmer.commons.watch.v1.Watch/Watch``: dispatch by kind name to the kind's watch pipeline."""
    bindings: dict[str, tuple[KindRuntime, MethodBinding]] = {}
    for kind in executor.registry.kinds:
        assert kind.watch is not None
        bindings[kind.name] = (
            kind,
            MethodBinding(
                path=WATCH_PATH,
                operation=WATCH_OPERATION,
                pipeline=kind.watch,
                request_cls=watch_pb2.WatchRequest,
                response_cls=watch_pb2.WatchEvent,
                server_streaming=True,
                access=kind.watch_access,
            ),
        )
    registry = executor.registry
    known = ", ".join(sorted(bindings))

    def stream(request: Message | Malformed, context: grpc.ServicerContext) -> Iterator[Message]:
        if isinstance(request, Malformed):
            status.abort(context, _malformed(next(iter(bindings.values()))[1], request))
        name = request.kind  # type: ignore[attr-defined]
        found = registry.find(name) if name else None
        if found is None:
            status.abort(context, InvalidArgument.field("kind", f"'{name}' is not a kind this server serves ({known})"))
        kind, binding = bindings[found.name]
        yield from _streamed(executor, limit, kind, binding, request, context)

    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=tolerant(watch_pb2.WatchRequest, executor.registry),
        response_serializer=_stream_serializer(watch_pb2.WatchEvent),
    )


def unary_reads(registry: Registry, *, on_loop: bool = False) -> frozenset[str]:
    """Paths of every unary rpc that writes nothing: the server runs them on its read pool
    (``on_loop``: inline on the event loop, so only those whose steps are all the framework's)."""
    return frozenset(
        path
        for kind in registry.kinds
        for path, binding in kind.methods.items()
        if not binding.pipeline.writes
        and not binding.server_streaming
        and (not on_loop or _framework_only((*binding.pipeline.pre, *binding.pipeline.txn)))
    )


_FRAMEWORK = ("stigmer_core.", "stigmer_plugins.")


def inline_streams(registry: Registry) -> frozenset[str]:
    """Paths of every server stream whose steps are all the framework's (``Watch`` when every
    kind's watch is): on a store whose reads run on the event loop, the asyncio server runs these
    there too (``async_calls.inline_stream``), a stream waiting for its next event holding no
    thread, and sending one without a thread handoff."""
    found = {
        path
        for kind in registry.kinds
        for path, binding in kind.methods.items()
        if binding.server_streaming and _framework_only((*binding.pipeline.pre, *binding.pipeline.txn))
    }
    if all(kind.watch is not None and _framework_only((*kind.watch.pre, *kind.watch.txn)) for kind in registry.kinds):
        found.add(WATCH_PATH)
    return frozenset(found)


def _framework_only(steps: Iterable[Step]) -> bool:
    """Whether every step is the framework's own (stigmer_core and its first-party kinds).

    A call runs on the asyncio server's event loop only when all the work it does there is
    known to be quick: a third-party step may block (an HTTP call, a slow parse), and on the
    loop it would hold up every call of the daemon, health checks included. Such a call runs
    on a thread of the rpc pool instead, and holds up only itself.
    """
    for found in steps:
        fn = getattr(found, "fn", found)
        module = getattr(fn, "__module__", None) or type(found).__module__
        if not module.startswith(_FRAMEWORK):
            return False
    return True


def build_handlers(
    registry: Registry,
    store: Store,
    authenticator: Authenticator | None = None,
    events: EventHub | None = None,
    stream_limit: StreamLimit | None = None,
    executor: Executor | None = None,
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """service full name -> method name -> handler, for every kind, and the Watch service."""
    events = events or EventHub(store)
    limit = stream_limit or StreamLimit(
        events.settings.max_streams, events.settings.max_streams_per_caller, events.settings.max_streams_per_org
    )
    executor = executor or Executor(registry, store, authenticator, events)
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for kind in registry.kinds:
        for path, binding in kind.methods.items():
            service, method = path[1:].split("/")
            services.setdefault(service, {})[method] = _handler(executor, kind, binding, limit)
    if registry.kinds:
        services[WATCH_SERVICE] = {"Watch": _watch_handler(executor, limit)}
    return services
