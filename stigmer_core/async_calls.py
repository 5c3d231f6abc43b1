"""The framework's handlers served on grpc's asyncio server.

The controller builds one set of sync handlers, which the in-process channel
calls directly. The network server is ``grpc.aio``: its event loop receives
every call itself, where grpc's sync server hands each call from its poller
thread to a pool thread and the answer back, and with many calls in flight
those handoffs (the GIL changing hands, futex calls in the kernel) cost more
than the framework's own work. So this module runs each sync handler where
its work belongs, chosen per method by the server:

- inline on the event loop (``pool`` None): a read on LMDB never waits on
  I/O, so it costs less there than a thread switch would;
- on a thread pool: a read that waits on a database, a write on a database
  (it waits for its group commit, and the more writers wait together, the
  more share one durable commit), and the pull of each server-stream message
  of a stream that is not the framework's own;
- a framework stream on LMDB inline too (``inline_stream``): it yields where
  it would wait for its next event, and the loop awaits that wake-up.

(A write on LMDB is not a sync handler here: ``controller.queued_writes``
queues it on the group commit from the loop.)

A handler sees a ``grpc.ServicerContext`` (``CallContext``) over the aio
call, so status mapping, trailing metadata and ``is_active`` work as on the
in-process channel.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from concurrent import futures
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from stigmer_core import request_read, status
from stigmer_core.errors import ResourceExhausted, StartupError
from stigmer_core.pipeline.events import Idle
from stigmer_core.request_read import ENV as READ_ENV
from stigmer_core.request_read import log_ended
from stigmer_core.status import send_status
from stigmer_core.unsent_answers import UnsentAnswers

if TYPE_CHECKING:
    from stigmer_core.accounts import Account
    from stigmer_core.call_limit import CallLimit

T = TypeVar("T")
Metadata = tuple[tuple[str, Any], ...]
_END = object()


class _Aborted(Exception):
    """A sync handler ended its call with a status; the async side sends it."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class CallContext(grpc.ServicerContext):
    """What a sync handler sees of one aio call."""

    __slots__ = ("_call", "_callbacks", "_trailing", "active", "waits_idle")

    def __init__(self, call: aio.ServicerContext[Any, Any]) -> None:
        self._call = call
        self._trailing: Metadata = ()
        self._callbacks: list[Callable[[], None]] = []
        self.active = True
        """False once the caller went away: a stream's handler stops at its next look."""
        self.waits_idle = False
        """Whether the stream's driver awaits the ``Idle`` its handler yields (``inline_stream``)."""

    def invocation_metadata(self) -> Any:
        return self._call.invocation_metadata() or ()

    def peer(self) -> str:
        return str(self._call.peer())

    def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise _Aborted(_Status(code, details, self._trailing))

    def abort_with_status(self, status: grpc.Status) -> Any:
        raise _Aborted(status)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(trailing_metadata)
        self._call.set_trailing_metadata(self._trailing)

    def is_active(self) -> bool:
        """False once the call ended: its stream was closed, its client went away, or its deadline passed."""
        if not self.active or self._call.done():
            return False
        remaining = self._call.time_remaining()
        return remaining is None or remaining > 0

    def time_remaining(self) -> float | None:
        remaining = self._call.time_remaining()
        return None if remaining is None else float(remaining)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._call.set_code(code)

    def set_details(self, details: str) -> None:
        self._call.set_details(details)

    def peer_identities(self) -> Any:
        return self._call.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._call.peer_identity_key()

    def auth_context(self) -> Any:
        return self._call.auth_context()

    def cancel(self) -> None:
        # Part of grpc.RpcContext, which a servicer context inherits; a server ends a call
        # with a status, so a handler calling this is a bug to be told at once.
        raise NotImplementedError("a server cannot cancel its own call; abort it with a status")

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` when a stream's call ends (a unary call's: never; none asks)."""
        self._callbacks.append(callback)
        return True

    def ended(self) -> None:
        """The call is over (finished, failed or cancelled): what was registered runs now,
        though the stream's generator may still be parked in a pull until its next look."""
        self.active = False
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        # The aio call sends it with a coroutine, which a sync handler on a pool thread cannot
        # await; no framework handler sends any, so one that does is told at once.
        raise NotImplementedError("the framework's handlers send no initial metadata")

    def set_compression(self, compression: grpc.Compression) -> None:
        self._call.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._call.disable_next_message_compression()


def unary(behavior: Callable[[Any, grpc.ServicerContext], Any], pool: futures.Executor | None) -> Any:
    """An aio unary behavior running the sync ``behavior`` inline (``pool`` None) or on ``pool``."""
    if pool is None:

        async def inline(request: Any, call: aio.ServicerContext[Any, Any]) -> Any:
            try:
                return behavior(request, CallContext(call))
            except _Aborted as aborted:
                await send_status(call, aborted.status)

        return inline

    async def pooled(request: Any, call: aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, behavior, request, CallContext(call))
        except _Aborted as aborted:
            await send_status(call, aborted.status)

    return pooled


def _pull(iterator: Any) -> Any:
    return next(iterator, _END)


def _close_when_done(pending: futures.Future[Any], iterator: Any) -> None:
    """Close a stream's generator once its pull in flight returns (it runs on a pool
    thread, and a generator cannot be closed while it runs)."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    if pending.done():
        close()
    else:
        pending.add_done_callback(lambda _: close())


def stream(behavior: Callable[[Any, grpc.ServicerContext], Any], pool: futures.Executor) -> Any:
    """An aio server-stream behavior pulling the sync generator ``behavior`` returns, one message
    per pool task; when the caller goes away the generator sees ``is_active()`` false, and is closed."""

    async def pulled(request: Any, call: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        context = CallContext(call)
        iterator = behavior(request, context)
        pending: futures.Future[Any] | None = None
        try:
            while True:
                pending = pool.submit(_pull, iterator)
                item = await asyncio.wrap_future(pending)
                if item is _END:
                    pending = None
                    return
                yield item
                pending = None
        except _Aborted as aborted:
            pending = None
            await send_status(call, aborted.status)
        finally:
            context.ended()
            if pending is not None:
                _close_when_done(pending, iterator)
            else:  # not running: its finally blocks (the stream slot, the subscription) run now
                _close_when_done(_DONE, iterator)

    return pulled


_DONE: futures.Future[Any] = futures.Future()
_DONE.set_result(None)


def inline_stream(behavior: Callable[[Any, grpc.ServicerContext], Any], pool: futures.Executor) -> Any:
    """An aio server-stream behavior running the sync generator ``behavior`` returns on the event
    loop itself, for a stream whose every step is the framework's on a store that never waits on
    I/O (LMDB): where it would wait for its next event it yields an ``Idle``, and the loop awaits
    that wake-up (or its timeout), holding no thread; the step after a ``READS_LOG`` (a page of a
    catch-up read from the log) runs on ``pool``. Pulled on a pool thread (``stream``), each
    message cost a handoff to the thread and one back, and the stream's thread was woken for it:
    0.7x-0.9x the daemon's CPU per create with 60 watches (``python -m bench --only streams``)."""

    async def inlined(request: Any, call: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        context = CallContext(call)
        context.waits_idle = True
        loop = asyncio.get_running_loop()
        wakeups = wakeups_of(loop)
        iterator = behavior(request, context)
        pending: futures.Future[Any] | None = None
        try:
            item = next(iterator, _END)
            while item is not _END:
                if item.__class__ is not Idle:
                    yield item
                elif item.reads_log:
                    pending = pool.submit(_pull, iterator)
                    item = await asyncio.wrap_future(pending)
                    pending = None
                    continue
                else:
                    await _idled(item, loop, wakeups)
                item = next(iterator, _END)
        except _Aborted as aborted:
            pending = None
            await send_status(call, aborted.status)
        finally:
            context.ended()
            # its finally blocks (the stream slot, the subscription) run now, or once its step on
            # the pool returns (a generator cannot be closed while it runs)
            _close_when_done(_DONE if pending is None else pending, iterator)

    return inlined


async def _idled(idle: Idle, loop: asyncio.AbstractEventLoop, wakeups: Wakeups) -> None:
    """Until ``idle``'s wake is set (by the dispatcher, from its thread) or its seconds pass;
    with no wake (``events.TURN``), once the loop's other ready calls have had a turn."""
    wake = idle.wake
    if wake is None:
        await asyncio.sleep(0)
        return
    answered: asyncio.Future[None] = loop.create_future()
    wake.then(partial(wakeups.resolve, answered))
    try:
        if wake.is_set():  # set before the callback was in place: nobody will call it for that
            return
        timer = loop.call_later(idle.seconds, _settle, answered)
        try:
            await answered
        finally:
            timer.cancel()
    finally:
        wake.then(None)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups:
    """Futures of one event loop, resolved from other threads with one wake-up of the loop per
    burst: a group commit answers a whole batch at once, and each ``call_soon_threadsafe`` would
    write to the loop's wake-up socket and hand it the GIL again."""

    __slots__ = ("_lock", "_loop", "_ready", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[asyncio.Future[None]] = []
        self._scheduled = False

    def resolve(self, future: asyncio.Future[None]) -> None:
        """Set ``future``'s result (None) on its loop soon; callable from any thread."""
        with self._lock:
            self._ready.append(future)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready, self._scheduled = self._ready, [], False
        for future in ready:
            if not future.done():  # cancelled: its caller went away
                future.set_result(None)


_WAKEUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wakeups] = weakref.WeakKeyDictionary()


def wakeups_of(loop: asyncio.AbstractEventLoop) -> Wakeups:
    """The loop's one ``Wakeups``: streams woken by one commit then cost the loop one wake-up."""
    found = _WAKEUPS.get(loop)
    if found is None:
        found = _WAKEUPS[loop] = Wakeups(loop)
    return found


LOOP_ENV = "STIGMER_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def new_event_loop(environ: Mapping[str, str] | None = None) -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (a dependency wherever it builds: not on Windows), else
    the standard library's; ``STIGMER_EVENT_LOOP`` picks one (``asyncio`` keeps the standard
    library's, ``uvloop`` requires it). grpc's asyncio server wakes its loop for every call it
    receives and every answer it sends, and on uvloop's loop those wake-ups cost less: a daemon's
    gets with 32 in flight took about a tenth less CPU each (``python -m bench --only get``)."""
    wanted = (os.environ if environ is None else environ).get(LOOP_ENV, "").strip().lower()
    if wanted not in ("", *LOOPS):
        raise StartupError(f"{LOOP_ENV} must be one of {', '.join(LOOPS)}, not {wanted!r}")
    if wanted != "asyncio":
        try:
            import uvloop
        except ImportError:
            if wanted == "uvloop":
                raise StartupError(f"{LOOP_ENV}=uvloop, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _LateEventOfAClosedLoop(logging.Filter):
    """grpc's asyncio layer polls completions for every loop of the process on a thread of its own
    and hands each to its call's loop; an event of a server already stopped, whose loop was closed,
    reached it late and asyncio logged the ``RuntimeError`` at ERROR, from whatever loop ran the
    hand-off (a second server's, in a process serving on two), where nothing had failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(error, RuntimeError)
            and str(error) == "Event loop is closed"
            and "PollerCompletionQueue._handle_events" in record.getMessage()
        )


logging.getLogger("asyncio").addFilter(_LateEventOfAClosedLoop())


class LoopThread:
    """An asyncio event loop on a thread of its own, for a server driven from sync code."""

    def __init__(self, name: str = "stigmer-loop") -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


NO_REQUEST = (
    "a unary or server-streaming call requires exactly one request message; the client sent none (or only part of one)"
)

Admit = Callable[[grpc.ServicerContext, str], "Account | None"]
"""``request_read.authenticated``'s check: refuses (aborts) a caller from its metadata alone, and
returns the account whose shares of unread calls the call counts against (None: no share)."""


class ReadBound:
    """Ends, DEADLINE_EXCEEDED, each call whose request message has not come ``seconds`` after its
    headers, and keeps each account to ``limit``'s shares of calls waiting for theirs.

    One sweep of the loop every ``GRANULARITY`` looks at the calls in the order they came
    (they all wait the same bound), so a call whose message comes with its headers, as every grpc
    client's does, costs an append and a flag: a timer per call (``asyncio.timeout``) cost 3-6 µs
    of the loop's time, ``wait_for`` twice that. One bound serves a whole server: one sweep.

    With a ``limit`` (a share set by its setting: this server holds no thread for an unread call,
    only what its client sent of the message), a principal's calls count as on the sync server
    (``call_limit``): once one has waited ``grace`` for its message, and for a while after one
    ends without it; past the share the next call is refused RESOURCE_EXHAUSTED before anything
    waits for its message, and one turning unread is ended."""

    GRANULARITY = 0.25
    """How far past its bound a late call may run."""

    def __init__(self, seconds: float, grace: float | None = None, limit: CallLimit | None = None) -> None:
        self.seconds = seconds
        self.grace = min(request_read.GRACE, seconds / 2) if grace is None else min(grace, seconds)
        self.strike = min(request_read.STRIKE, self.grace)
        self.struck_for = min(seconds, request_read.DEFAULT_SECONDS)
        self.limit = limit
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._graced: collections.deque[_Waiting] = collections.deque()
        self._sweeping = False

    def watch(self, task: asyncio.Task[Any], account: Account | None = None) -> _Waiting:
        """The call of ``task`` is waiting for its message; with an account (and a limit), it
        counts against the account's shares once it has waited ``grace``."""
        loop = task.get_loop()
        now = loop.time()
        counted = account if self.limit is not None else None
        waiting = _Waiting(now, now + self.seconds, task, counted)
        self._waiting.append(waiting)
        if counted is not None:
            self._graced.append(waiting)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self.GRANULARITY, self._sweep, loop)
        return waiting

    def done(self, waiting: _Waiting, read: bool) -> None:
        """The call's wait is over: its message came (``read``), or the call ended without it (one
        that waited ``strike`` for it counts for ``struck_for`` more)."""
        waiting.over = True
        account, limit = waiting.account, self.limit
        if account is None or limit is None:
            return
        now = time.monotonic()
        struck = not read and waiting.task.get_loop().time() - waiting.since >= self.strike
        until = now + self.struck_for if struck else None
        if waiting.counted:
            limit.give(account, until)
        elif until is not None:
            limit.strike(account, until)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now, graced, waiting = loop.time(), self._graced, self._waiting
        while graced and (graced[0].over or graced[0].since + self.grace <= now):
            late = graced.popleft()
            if late.over:
                continue
            assert self.limit is not None and late.account is not None
            if self.limit.late(late.account):
                late.counted = True
            else:
                late.ended = self.limit.ended(late.account, self.grace)
                late.task.cancel()
        while waiting and (waiting[0].over or waiting[0].due <= now):
            late = waiting.popleft()
            if not late.over and not late.ended:
                late.ended = _DUE
                late.task.cancel()
        if waiting:
            loop.call_later(self.GRANULARITY, self._sweep, loop)
        else:
            self._sweeping = False


_DUE = "due"


class _Waiting:
    __slots__ = ("account", "counted", "due", "ended", "over", "since", "task")

    def __init__(self, since: float, due: float, task: asyncio.Task[Any], account: Account | None) -> None:
        self.since = since
        self.due = due
        self.task = task
        self.account = account
        self.over = False
        self.counted = False
        self.ended = ""
        """Why the sweep cancelled the call: ``_DUE``, or the share's message."""


async def _admitted(
    call: aio.ServicerContext[Any, Any], path: str, admit: Admit, bound: ReadBound, answers: UnsentAnswers | None
) -> Account | None:
    """The account whose shares the call counts against, once its caller is admitted and within
    them (of unread calls, and with ``answers``, of answers not yet sent); a refused call is
    ended with its status."""
    try:
        context = CallContext(call)
        account = admit(context, path)
        if account is not None and answers is not None:
            try:
                answers.check(account)
            except ResourceExhausted as refused:
                status.abort(context, refused)
        if account is not None and bound.limit is not None:
            try:
                bound.limit.take(account)
            except ResourceExhausted as refused:
                status.abort(context, refused)
    except _Aborted as aborted:
        await send_status(call, aborted.status)
    return account


async def _first(
    call: aio.ServicerContext[Any, Any],
    path: str,
    admit: Admit | None,
    bound: ReadBound,
    answers: UnsentAnswers | None = None,
) -> tuple[Account | None, Any]:
    """The call's one request, once its caller is admitted, read within ``bound``'s seconds.

    A caller is refused before its message is awaited, and the message is awaited under a bound:
    a client that sends a call's headers and never its message (a raw HTTP/2 client; grpc
    clients send both together) was held open for good, with no token at all, thousands of
    them at once, each keeping the memory of a call (as ``request_read`` bounds it on the sync
    server)."""
    account = None if admit is None else await _admitted(call, path, admit, bound, answers)
    task = asyncio.current_task()
    assert task is not None  # a call's handler runs in a task of grpc's
    waiting = bound.watch(task, account)
    request: Any = aio.EOF
    try:
        request = await call.read()
    except asyncio.CancelledError:
        if not waiting.ended:
            raise
        task.uncancel()
        if waiting.ended != _DUE:
            await call.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, waiting.ended)
        log_ended(path, call.peer(), bound.seconds)
        await call.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request message of {path} did not arrive within {bound.seconds:g} seconds ({READ_ENV}); "
            "the call was ended",
        )
    finally:
        bound.done(waiting, request is not aio.EOF)
    if request is aio.EOF:
        await call.abort(grpc.StatusCode.UNIMPLEMENTED, NO_REQUEST)
    return account, request


def one_request(
    behavior: Callable[[Any, aio.ServicerContext[Any, Any]], Any],
    path: str,
    admit: Admit | None,
    bound: ReadBound,
    answers: UnsentAnswers | None = None,
    serialize: Callable[[Any], bytes] | None = None,
) -> Any:
    """``behavior`` (an aio unary behavior) served as a client stream that reads its one request.

    grpc's asyncio server never answers a unary call whose client half-closes without
    a message: it holds it to its deadline (and a drain for its whole grace). Read here,
    the missing message is answered at once, as grpc's sync server answers it, and a caller
    is refused, and a message waited for, as ``_first`` says. With ``answers`` (and ``admit``),
    the answer is serialized here (``serialize``; the handler's serializer passes bytes on) and
    counted against its account until its call ends (``unsent_answers``).
    """
    if answers is None or admit is None or serialize is None:

        async def read_one(requests: Any, call: aio.ServicerContext[Any, Any]) -> Any:
            return await behavior((await _first(call, path, admit, bound))[1], call)

        return read_one

    async def read_counted(requests: Any, call: aio.ServicerContext[Any, Any]) -> Any:
        account, request = await _first(call, path, admit, bound, answers)
        data = serialize(await behavior(request, call))
        if account is not None:
            try:
                release = answers.hold(account, len(data), path)
            except ResourceExhausted as refused:
                try:
                    status.abort(CallContext(call), refused)
                except _Aborted as aborted:
                    await send_status(call, aborted.status)
            call.add_done_callback(lambda _: release())
            if call.done():
                release()
        return data

    return read_counted


def one_request_stream(
    behavior: Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
    path: str,
    admit: Admit | None,
    bound: ReadBound,
) -> Any:
    """``behavior`` (an aio server-stream behavior) served as a bidirectional stream that reads its
    one request: as ``one_request``, for the same reasons."""

    async def read_one(requests: Any, call: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async for item in behavior((await _first(call, path, admit, bound))[1], call):
            yield item

    return read_one
