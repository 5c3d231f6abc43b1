"""On grpc's sync server, a call's caller is known and its request read under a bound, before it can hold a thread.

grpc's sync server hands a unary call (or a server stream) to a pool thread
at once, and that thread then waits inside grpc for the request message. A
client that sends a call's headers and never its message (a raw HTTP/2
client; grpc clients never do this) held the thread for good: a few dozen
such calls, with no token at all, took every read and rpc thread of a team
server and stopped every member's calls. So each such handler is served as a
client-streaming one (the same on the wire: a unary call is a request stream
of one message), whose behavior runs before the read: it refuses a caller
without a valid token when the server requires one (``admit``), counts a
unary call against its caller's share of the pool's threads while it waits
for its message, refusing it at once past the share (``call_limit``), and
takes the message under
``STIGMER_REQUEST_READ_TIMEOUT`` seconds, after which the call ends
DEADLINE_EXCEEDED and its thread is free (``ReadDeadlines``).

A client-streaming handler (server reflection) reads its own messages and is
left as it is: reflection keeps to its own bound of open streams.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from stigmer_core import denied_log, env_numbers, status
from stigmer_core.accounts import Account
from stigmer_core.denied_log import DeniedLog
from stigmer_core.errors import ResourceExhausted, StartupError, Unauthenticated
from stigmer_core.unsent_answers import UnsentAnswers, passthrough

if TYPE_CHECKING:
    from stigmer_core.auth.tokens import Authenticator
    from stigmer_core.call_limit import CallLimit

log = logging.getLogger(__name__)

ENV = "STIGMER_REQUEST_READ_TIMEOUT"
DEFAULT_SECONDS = 5.0
"""A grpc client sends a call's message with its headers, so a message still missing after
seconds is no client's; on a link slow enough to need more, raise the setting (and, with several
large requests in flight, the grace of ``call_limit``, ``STIGMER_UNREAD_CALL_GRACE``)."""
MAX_SECONDS = 3600.0
GRACE = 1.0
"""How long a call counted against its caller's share (``call_limit``) may wait for its message
before it counts as unread (half the read timeout when that is shorter): a grpc client's message
comes with its headers, so only a caller that sends none has calls this late."""
STRIKE = 0.05
"""How long a counted call must have waited for its message for its ending without one to count
against its caller (``ReadDeadlines``): a grpc client's message comes with its headers and is
read within milliseconds, so only a call that sends none waits this long and then ends."""
GRANULARITY = 0.25
"""How far past its bound a late call may run: the watcher wakes at most this often, not at
every call's own deadline, so a busy server's calls cost it a queue append each."""


_ENDED: list[DeniedLog] = []
"""The ``ended:`` lines' own rate (``denied_log``), made at the first one."""


def log_ended(method: str, peer: str, seconds: float) -> None:
    """One ``ended:`` line per method and interval (``STIGMER_DENIED_LOG_SECONDS``), the next one
    counting those left out: a caller with a token (or any caller of a server that requires none)
    sending thousands of calls without their messages wrote a line each."""
    if not _ENDED:
        _ENDED.append(DeniedLog(denied_log.seconds_from_env()))
    left_out = _ENDED[0].admit((method, "ended", ""))
    if left_out is None:
        return
    more = f" (and {left_out:,} more like it in the last {_ENDED[0].seconds:g} s)" if left_out else ""
    log.warning("ended: method=%s peer=%s: no request message within %gs (%s)%s", method, peer, seconds, ENV, more)


def read_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``STIGMER_REQUEST_READ_TIMEOUT`` (seconds), or the default."""
    found = env_numbers.seconds(os.environ if environ is None else environ, ENV)
    return DEFAULT_SECONDS if found is None else checked(found)


def checked(seconds: float) -> float:
    """``seconds`` if it can bound a read: above 0 and at most an hour (a bound that never comes
    is what the setting exists to prevent)."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise StartupError(f"{ENV} must be above 0 and at most {MAX_SECONDS:g} seconds, not {seconds:g}")
    return seconds


class ReadDeadlines:
    """One thread that ends every call whose request message is late.

    Every call gets the same bound, so calls come due in the order they were watched: a
    queue, appended to without a lock, is all the bookkeeping a call costs. A call counted
    against its caller's share (``call_limit``) is watched a second time, at ``grace``: still
    waiting for its message then, it counts as unread, or is ended when its caller already has
    its share of such calls. One that ends without its message once it has waited ``STRIKE``
    (reset by its client, ended by its deadline or by the share) counts against its caller for
    ``struck_for`` more: a caller that resets its calls just before their grace holds the threads
    as surely as one that never does."""

    def __init__(self, seconds: float, grace: float | None = None) -> None:
        self.seconds = seconds
        self.grace = min(GRACE, seconds / 2) if grace is None else min(grace, seconds)
        self.strike = min(STRIKE, self.grace)
        self.struck_for = min(seconds, DEFAULT_SECONDS)
        """How long a call that ended unread counts: the default read timeout at most, so a
        read timeout raised for a slow link does not keep a caller whose connection dropped
        refused for as long."""
        self._due: collections.deque[list[Any]] = collections.deque()
        self._graced: collections.deque[tuple[float, list[Any]]] = collections.deque()
        self._counted = threading.Lock()
        """Settles, for a counted call, whether its message or its grace came first."""
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def watch(
        self, context: grpc.ServicerContext, method: str, account: Account | None = None, limit: CallLimit | None = None
    ) -> list[Any]:
        """An entry to pass to ``done`` once the message is in; until then ``context`` is due, and
        with a ``limit``, counted against ``account``'s shares once it has waited ``grace``."""
        if self._thread is None:
            self._start()
        now = time.monotonic()
        entry = [now + self.seconds, context, method, account, limit, False, now]
        # The watcher sleeps until the nearest time it knows of; a queue's later entries come
        # due after its first, so only an entry into an empty queue needs to wake it.
        wake = not self._due
        self._due.append(entry)
        if limit is not None:
            wake = wake or not self._graced
            self._graced.append((now + self.grace, entry))
        if wake:
            self._wake.set()
        return entry

    def done(self, entry: list[Any], read: bool) -> None:
        """The call's wait is over: its message came (``read``), or the call ended without it."""
        limit = entry[4]
        if limit is None:
            entry[1] = None
            return
        now = time.monotonic()
        struck = not read and now - entry[6] >= self.strike
        with self._counted:
            entry[1] = None
            if entry[5]:
                limit.give(entry[3], now + self.struck_for if struck else None)
            elif struck:
                limit.strike(entry[3], now + self.struck_for)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stigmer-late-requests", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        due, graced = self._due, self._graced
        while not self._closed.is_set():
            self._wake.clear()  # before looking: an append after the look sets it again
            if not due and not graced:
                self._wake.wait()
                continue
            now = time.monotonic()
            while graced and graced[0][0] <= now:
                self._count(graced.popleft()[1])
            while due and due[0][0] <= now:
                _, context, method, *_ = due.popleft()
                if context is not None:
                    self._end(context, method)
            nearest = min(queue[0][0] for queue in (due, graced) if queue) if (due or graced) else now
            self._wake.wait(max(nearest - now, GRANULARITY))

    def _count(self, entry: list[Any]) -> None:
        """A counted call still waiting at its grace: unread now, within its caller's share, or
        ended past it."""
        _, context, method, account, limit, *_ = entry
        with self._counted:
            if entry[1] is None:
                return  # its message came first
            if limit.late(account):
                entry[5] = True
                return
        self._cancel(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, limit.ended(account, self.grace))

    def _end(self, context: grpc.ServicerContext, method: str) -> None:
        message = (
            f"the request message of {method} did not arrive within {self.seconds:g} seconds "
            f"({ENV}); the call was ended"
        )
        log_ended(method, context.peer(), self.seconds)
        self._cancel(context, method, grpc.StatusCode.DEADLINE_EXCEEDED, message)

    @staticmethod
    def _cancel(context: grpc.ServicerContext, method: str, code: grpc.StatusCode, message: str) -> None:
        # grpc's ServicerContext.cancel() ends a call CANCELLED with no message; the call
        # underneath can end it with a status of its own, which says why.
        call = getattr(getattr(context, "_rpc_event", None), "call", None)
        try:
            if call is not None:
                call.cancel(code.value[0], message)
            else:
                context.cancel()
        except Exception:  # the call ended meanwhile: nothing is left to end
            log.debug("could not end a late call of %s", method, exc_info=True)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()


Admit = Callable[[grpc.ServicerContext, str], "Account | None"]
"""Refuses a call (aborting ``context``) before its message is read; ``str`` is its method. Returns
the account (principal and orgs) whose shares of threads the call counts against
(``call_limit``), or None for the local administrator, who has no share."""


def _first(
    requests: Iterator[Any],
    context: grpc.ServicerContext,
    method: str,
    deadlines: ReadDeadlines,
    account: Account | None = None,
    limit: CallLimit | None = None,
) -> Any:
    entry = deadlines.watch(context, method, account, limit)
    read = False
    try:
        request = next(requests)
        read = True
        return request
    except StopIteration:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f'"{method}" requires exactly one request message.')
    finally:
        deadlines.done(entry, read)


def read_first(
    method: str,
    handler: grpc.RpcMethodHandler,
    deadlines: ReadDeadlines,
    admit: Admit | None,
    limit: CallLimit | None = None,
    answers: UnsentAnswers | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` (a unary or server-streaming one) as a client-streaming handler that runs
    ``admit``, then reads its one message under ``deadlines``, then runs the original behavior.
    A call of an admitted account is refused while its principal (or one of its orgs) has
    ``limit``'s share of calls counted, and counts as one if its message is not in by
    ``deadlines.grace`` (or if it ends without one). A unary call of an admitted account is
    refused while it (or one of its orgs, or the daemon) holds ``answers``' bound of answers not
    yet sent, and its own answer counts there until its call ends. The behavior's thread pool and non-blocking mark stay with it."""
    if handler.request_streaming:
        return handler
    streaming = handler.response_streaming
    inner = handler.unary_stream if streaming else handler.unary_unary
    counts = answers is not None and admit is not None and not streaming
    serialize = handler.response_serializer

    def admitted(requests: Iterator[Any], context: grpc.ServicerContext) -> tuple[Account | None, Any]:
        """The call's account and message, once its caller is admitted and within its shares."""
        account = admit(context, method) if admit is not None else None
        if account is not None and counts:
            try:
                answers.check(account)  # type: ignore[union-attr]  # ``counts`` says it is there
            except ResourceExhausted as refused:
                status.abort(context, refused)
        if account is None or limit is None:
            return account, _first(requests, context, method, deadlines)
        try:
            limit.take(account)
        except ResourceExhausted as refused:
            status.abort(context, refused)
        return account, _first(requests, context, method, deadlines, account, limit)

    def behavior(requests: Iterator[Any], context: grpc.ServicerContext, *more: Any) -> Any:
        account, request = admitted(requests, context)
        answer = inner(request, context, *more)
        if not counts:
            return answer
        data = serialize(answer) if serialize is not None else answer
        if account is not None:
            try:
                release = answers.hold(account, len(data), method)  # type: ignore[union-attr]
            except ResourceExhausted as refused:
                status.abort(context, refused)
            if not context.add_callback(release):  # the call already ended
                release()
        return data

    def stream(requests: Iterator[Any], context: grpc.ServicerContext, *more: Any) -> Any:
        sent = inner(admitted(requests, context)[1], context, *more)
        if sent is not None:
            yield from sent

    non_blocking = bool(getattr(inner, "experimental_non_blocking", False))
    chosen: Any = behavior if (not streaming or non_blocking) else stream
    pool = getattr(inner, "experimental_thread_pool", None)
    if pool is not None:
        chosen.experimental_thread_pool = pool
    if non_blocking:
        chosen.experimental_non_blocking = True
    field = "stream_stream" if streaming else "stream_unary"
    serializer = passthrough if counts else handler.response_serializer
    return handler._replace(
        request_streaming=True, unary_unary=None, unary_stream=None, response_serializer=serializer, **{field: chosen}
    )


def authenticated(authenticator: Authenticator, log_refusal: Callable[..., None]) -> Admit | None:
    """``admit`` for a server whose calls need a token: a caller without a valid one is refused
    UNAUTHENTICATED from its metadata alone (what it may do is checked after the read, as
    before); an admitted caller's principal and orgs are what its calls count against. None when tokens
    are not required: then no caller is refused for want of one, and any caller may call as the
    local administrator, so none has a share to keep to."""
    if not authenticator.required:
        return None

    def admit(context: grpc.ServicerContext, method: str) -> Account | None:
        metadata = context.invocation_metadata() or ()
        peer = context.peer()
        try:
            caller = authenticator.caller(metadata, peer)
        except Unauthenticated as denied:
            log_refusal(authenticator, denied, method, metadata, peer)
            status.abort(context, denied)
        except Exception as failed:  # answered by its status, as a failure in a handler is
            # a token not in the cache is read from the store: a database that is down or a pool
            # that is full is UNAVAILABLE, as in any call (grpc answered it UNKNOWN, unretried)
            status.abort(context, failed)
        return None if caller.unrestricted else Account(caller.principal, caller.orgs)

    return admit
