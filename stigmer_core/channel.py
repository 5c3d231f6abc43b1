"""A ``grpc.Channel`` that calls the framework's handlers in this process.

Generated stubs work on it unchanged. Requests and responses still cross
as bytes through the handlers' own serializers, so a client sees exactly
what it would see over the network (same parsing, same validation, same
rich status on errors) without a socket, and never shares a message object
with the server.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc

Metadata = Sequence[tuple[str, str | bytes]]


class InProcessRpcError(grpc.RpcError, grpc.Call):
    """A failed in-process call, shaped like grpc's own ``_InactiveRpcError``."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> None:
        super().__init__(f"<InProcessRpcError {code.name}: {details}>")
        self._code = code
        self._details = details
        self._trailing = tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def initial_metadata(self) -> Metadata:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    # grpc's interceptors treat a failed call as a finished future, as grpc's own error is.
    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> Exception:
        return self

    def traceback(self, timeout: float | None = None) -> None:
        return None


_KEY = re.compile(r"[0-9a-z_.\-]+")
_VALUE = re.compile(r"[\x20-\x7e]*")
_GOOD_KEYS: set[str] = set()
"""Keys seen valid (a few: the token's, the dry run's), so a call with metadata checks a set."""


def _checked(metadata: Metadata | None) -> Metadata:
    """``metadata`` as grpc's client takes it, else refused as grpc refuses it: over the network
    ``Stigmer-Dry-Run`` (a capital) is INTERNAL "Invalid metadata" before anything is sent, while
    in process it went through unread and the dry run wrote for real. A binary value (a key
    ending ``-bin``) must be bytes, TypeError as grpc's."""
    if not metadata:
        return ()
    found = tuple(metadata)
    decoded = False
    for key, value in found:
        if key not in _GOOD_KEYS:
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise InProcessRpcError(
                    grpc.StatusCode.INTERNAL,
                    f"Invalid metadata: key {key!r} is not lowercase letters, digits, '-', '_' and '.' (grpc "
                    "refuses it before sending)",
                )
            _GOOD_KEYS.add(key)
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                raise TypeError(f'Binary metadata key="{key}" expected bytes, got {type(value)}')
            continue
        if isinstance(value, bytes):  # grpc takes bytes for any key, and its server hands on text
            decoded = True
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                value = "\x00"  # refused below
        elif not isinstance(value, str):
            raise TypeError(f"Expected str, not {type(value)}")
        if not _VALUE.fullmatch(value):
            raise InProcessRpcError(
                grpc.StatusCode.INTERNAL,
                f"Invalid metadata: the value of {key!r} is not printable ASCII text (grpc refuses it before "
                "sending; a binary value goes under a key ending -bin)",
            )
    if decoded:  # as a network server's handler sees them: a dry run's b"true" is "true"
        return tuple(
            (key, value.decode("ascii") if isinstance(value, bytes) and not key.endswith("-bin") else value)
            for key, value in found
        )
    return found


_ENDING = threading.Lock()
"""Guards every context's callbacks between a call's end and a callback added from another thread:
held for a list swap, so one lock for all costs a call less than a lock of its own."""


class _Context(grpc.ServicerContext):
    def __init__(self, metadata: Metadata | None, timeout: float | None = None) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._metadata = _checked(metadata)
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._callbacks: list[Callable[[], None]] | None = []
        self._cancelled = False
        self._timer: threading.Timer | None = None

    # -- what handlers use -------------------------------------------------
    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise InProcessRpcError(code, details, self._trailing)

    def abort_with_status(self, status: grpc.Status) -> Any:
        raise InProcessRpcError(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def peer(self) -> str:
        return "in-process"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def is_active(self) -> bool:
        return not self._cancelled and (self._deadline is None or time.monotonic() < self._deadline)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def cancel(self) -> None:
        return None

    def cancel_call(self) -> None:
        """The client cancelled: the handler sees ``is_active()`` false from now on, and its
        callbacks run now (a stream waiting for events wakes and ends), as grpc runs them."""
        self._cancelled = True
        self._end()

    def end_at_deadline(self) -> None:
        """Run the callbacks when the deadline passes, so a stream waiting for events ends then, as
        grpc's server ends a call at its deadline; only streams pay for the timer's thread."""
        remaining = self.time_remaining()
        if remaining is not None:
            self._timer = threading.Timer(remaining, self._end)
            self._timer.daemon = True
            self._timer.start()

    def _end(self) -> None:
        with _ENDING:
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """False once the call ended, as grpc says: the callback is not called then."""
        with _ENDING:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        return None

    def set_compression(self, compression: grpc.Compression) -> None:
        return None

    def disable_next_message_compression(self) -> None:
        return None

    def finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        elif not self._callbacks:  # a unary call's, nearly always: no other thread adds to it
            self._callbacks = None
            return
        self._end()

    def failed(self) -> InProcessRpcError | None:
        if self._code is None or self._code == grpc.StatusCode.OK:
            return None
        return InProcessRpcError(self._code, self._details, self._trailing)


class _Done(grpc.Call, grpc.Future):
    """A finished call: result of ``with_call`` and ``future``."""

    def __init__(self, response: Any = None, error: InProcessRpcError | None = None, trailing: Metadata = ()) -> None:
        self._response = response
        self._error = error
        self._trailing = trailing

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._response

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self._error

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def code(self) -> grpc.StatusCode:
        return self._error.code() if self._error else grpc.StatusCode.OK

    def details(self) -> str:
        return self._error.details() if self._error else ""

    def trailing_metadata(self) -> Metadata:
        return self._error.trailing_metadata() if self._error else self._trailing

    def initial_metadata(self) -> Metadata:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


MAX_MESSAGE_BYTES = 4 << 20  # the network server's limit, so both paths refuse alike


def _bounded(data: bytes, what: str) -> bytes:
    if len(data) > MAX_MESSAGE_BYTES:
        raise InProcessRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what} larger than max ({len(data)} vs. {MAX_MESSAGE_BYTES})"
        )
    return data


def _deadline_exceeded() -> InProcessRpcError:
    return InProcessRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _unimplemented(method: str) -> InProcessRpcError:
    return InProcessRpcError(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}")


CLOSED = "Cannot invoke RPC on closed channel!"
"""grpc's own words for a call on a closed channel (a ``ValueError``), which a call on this
channel after it, or the application serving it, was closed raises too: the store under it is
closed, and a call reaching it failed INTERNAL with LMDB's "Attempt to operate on closed" text."""


class _Method:
    """One method's handler, how its messages cross, and whether the channel is still open."""

    def __init__(
        self,
        method: str,
        handler: grpc.RpcMethodHandler | None,
        serialize: Any,
        deserialize: Any,
        is_open: Callable[[], bool],
        opened: Callable[[_Stream], None] = lambda _: None,
    ) -> None:
        """``opened``: told of each stream this method opens, for the channel to cancel at its close."""
        self._method = method
        self._open = is_open
        self._opened = opened
        self._handler = handler
        self._serialize = serialize or (lambda message: message)
        self._deserialize = deserialize or (lambda data: data)


class _UnaryUnary(_Method, grpc.UnaryUnaryMultiCallable):
    def _invoke(self, request: Any, metadata: Metadata | None, timeout: float | None) -> tuple[Any, Metadata]:
        """The response and the trailing metadata the handler set.

        A call given a ``timeout`` ends as grpc's client ends one: DEADLINE_EXCEEDED when it
        is not positive (the handler never runs), and when the deadline passed before the
        answer was ready, whatever the answer (a write may have committed, as over the
        network). The handler sees the deadline in its context, so a write whose caller's
        deadline passed while its steps ran is refused before its transaction."""
        if not self._open():
            raise ValueError(CLOSED)
        handler = self._handler
        if handler is None or handler.unary_unary is None:
            raise _unimplemented(self._method)
        context = _Context(metadata, timeout)
        try:
            if context.expired():
                raise _deadline_exceeded()
            decoded = handler.request_deserializer(_bounded(self._serialize(request), "Received message"))
            response = handler.unary_unary(decoded, context)
            failed = context.failed()
            if failed is not None:
                raise failed
            answer = self._deserialize(_bounded(handler.response_serializer(response), "Sent message"))
        except InProcessRpcError:
            if context.expired():
                raise _deadline_exceeded() from None
            raise
        finally:
            context.finish()
        if context.expired():
            raise _deadline_exceeded()
        return answer, context.trailing_metadata()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None, **_: Any) -> Any:
        return self._invoke(request, metadata, timeout)[0]

    def with_call(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None, **_: Any) -> Any:
        response, trailing = self._invoke(request, metadata, timeout)
        return response, _Done(response, trailing=trailing)

    def future(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None, **_: Any) -> Any:
        try:
            response, trailing = self._invoke(request, metadata, timeout)
            return _Done(response, trailing=trailing)
        except InProcessRpcError as error:
            return _Done(error=error)


class _Stream(grpc.Call):
    """The response iterator of a server-streaming call; honours the call's deadline and ``cancel``.

    ``cancel`` may come from another thread while one waits in ``next``: the
    handler then sees its context inactive and ends, and the waiting reader
    gets CANCELLED, as over the network.
    """

    def __init__(self, responses: Iterator[Any], context: _Context) -> None:
        self._responses = responses
        self._context = context
        self._why = "Locally cancelled by application!"

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._context.cancelled:
            raise _cancelled(self._why)
        try:
            return next(self._responses)
        except InProcessRpcError:
            if self._context.cancelled:  # what the server said after the client went is not the client's to hear
                raise _cancelled(self._why) from None
            raise
        except StopIteration:
            if self._context.cancelled:
                raise _cancelled(self._why) from None
            if self._context.expired():
                raise _deadline_exceeded() from None
            raise

    def cancel(self) -> bool:
        self._context.cancel_call()
        close = getattr(self._responses, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # running in the reader's thread: it ends at its next check
                close()
        return True

    def channel_closed(self) -> None:
        """Its channel closed: CANCELLED "Channel closed!", as grpc's client says then."""
        self._why = "Channel closed!"
        self.cancel()

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    def details(self) -> str:
        return ""

    def trailing_metadata(self) -> Metadata:
        return ()

    def initial_metadata(self) -> Metadata:
        return ()

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _cancelled(why: str = "Locally cancelled by application!") -> InProcessRpcError:
    return InProcessRpcError(grpc.StatusCode.CANCELLED, why)


class _UnaryStream(_Method, grpc.UnaryStreamMultiCallable):
    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None, **_: Any) -> Any:
        if not self._open():
            raise ValueError(CLOSED)
        handler = self._handler
        if handler is None or handler.unary_stream is None:
            raise _unimplemented(self._method)
        decoded = handler.request_deserializer(_bounded(self._serialize(request), "Received message"))
        context = _Context(metadata, timeout)

        def responses() -> Iterator[Any]:
            try:
                for response in handler.unary_stream(decoded, context):
                    yield self._deserialize(_bounded(handler.response_serializer(response), "Sent message"))
            finally:
                context.finish()

        stream = _Stream(responses(), context)
        context.end_at_deadline()
        self._opened(stream)
        return stream


class _NotSupported(grpc.StreamUnaryMultiCallable, grpc.StreamStreamMultiCallable):
    def __init__(self, method: str) -> None:
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _unimplemented(self._method)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        raise _unimplemented(self._method)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        raise _unimplemented(self._method)


class InProcessChannel(grpc.Channel):
    """Serves ``/package.Service/method`` paths from a handler map."""

    def __init__(
        self, handlers: Mapping[str, grpc.RpcMethodHandler], serving: Callable[[], bool] | None = None
    ) -> None:
        """``serving``: whether what serves the handlers is still open (the application)."""
        self._handlers = dict(handlers)
        self._closed = False
        self._serving = serving
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()

    @classmethod
    def from_services(
        cls, services: Mapping[str, Mapping[str, grpc.RpcMethodHandler]], serving: Callable[[], bool] | None = None
    ) -> InProcessChannel:
        return cls({f"/{svc}/{name}": h for svc, methods in services.items() for name, h in methods.items()}, serving)

    def _is_open(self) -> bool:
        serving = self._serving
        return not self._closed and (serving is None or serving())

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None, *_: Any, **__: Any
    ) -> Any:
        return _UnaryUnary(method, self._handlers.get(method), request_serializer, response_deserializer, self._is_open)

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None, *_: Any, **__: Any
    ) -> Any:
        return _UnaryStream(
            method,
            self._handlers.get(method),
            request_serializer,
            response_deserializer,
            self._is_open,
            self._streams.add,
        )

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _NotSupported(method)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _NotSupported(method)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        callback(grpc.ChannelConnectivity.READY)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def close(self) -> None:
        """Its open streams end CANCELLED, as a grpc channel's do when it closes."""
        self._closed = True
        for stream in list(self._streams):
            stream.channel_closed()

    def __enter__(self) -> InProcessChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
