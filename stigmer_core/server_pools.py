"""Where the daemon runs each call: on grpc's event loop, or on one of three thread pools.

On LMDB the daemon serves on grpc's asyncio server (``grpc_servers``): a
unary read runs on its event loop, since it never waits on I/O
(``STIGMER_READ_THREADS=0``, LMDB's default), and a write runs its checks
there and is queued on the group commit, which answers it on the loop
(``controller.queued_writes``): neither takes a thread (``route``). On a
database it serves on grpc's sync server (``route_sync``): a read runs on the
read pool, whose few threads overlap their round trips (past a few they only
hand the GIL to each other: futex calls in the kernel), and a write on the
rpc pool, one thread per write in flight, since the more writers wait on one
group commit together, the more share it. Sync services (the identity
service) run on the rpc pool on either server. A server stream takes a
thread of the stream pool while it waits for its next message, which for a
watch is most of its life. On the sync server, health and server reflection
(which answer without a token) have pools of their own: a reflection stream
waits on its thread for the client's next request, so on the rpc pool a few
dozen idle ones took every thread writes and health checks need.

Measured with the bench's client in the same process, 32 in flight on an
LMDB daemon: gets went from 0.81x of a bare grpcio echo on grpc's sync server
(each call handed to a pool thread) to 0.90x-0.99x inline on the loop,
durable creates from 0.41x to 0.51x-0.55x queued from the loop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from concurrent import futures
from typing import Any

import attrs
import grpc

from stigmer_core import async_calls, call_limit, env_numbers, request_read, unsent_answers
from stigmer_core.call_limit import CallLimit
from stigmer_core.errors import StartupError
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.unsent_answers import UnsentAnswers, passthrough

REJECTING_THREADS = 4
"""Stream threads past the stream limit: room to refuse the next stream at once."""

HEALTH_THREADS = 2
"""Health checks on grpc's sync server: each takes a lock and a lookup, so two keep a load
balancer answered while every other pool is busy."""


MOST_PENDING_CALLS = 1_000_000
"""grpc counts pending calls in a C int, and twice this is its hard limit."""

LMDB_READ_THREADS = 0
"""An LMDB read never waits on I/O: it runs on the event loop, with no thread to hand it to.
Set ``STIGMER_READ_THREADS`` when a kind's read steps wait on something (a network call)."""
DATABASE_READ_THREADS = 4
"""A read on a database server waits a round trip, so a few overlap their waits."""


@attrs.frozen
class PoolSizes:
    """Threads per pool, and how long a call may hold one before its message is in; the
    ``STIGMER_*`` settings named below override the defaults."""

    read_threads: int | None = None
    """Unary reads (get, list, getByReference, a kind's own reads) running at once; the rest
    queue. 0: on the event loop, one at a time. None: the store engine's (``for_store``)."""
    rpc_threads: int = 32
    """Every other unary call on a thread (writes on a database, sync services) running at once:
    writes waiting on one group commit share it, so this bounds how many a commit can carry."""
    reflection_streams: int = 64
    """Server reflection streams open at once (``STIGMER_MAX_REFLECTION_STREAMS``); the next is
    refused. Reflection answers without a token, and on grpc's sync server each open stream
    holds a thread while it waits for the client's next request: a tool asks a few questions
    and closes its stream, so a few at a time serve many users, and the bound keeps idle ones
    from growing without end. 64, not fewer: a loader asking for every service's descriptor at
    once (grpc-js-reflection-client opens a stream per question) asks for about 30, which 16
    refused in part. Threads are made as streams need them."""
    unsent_bytes_per_caller: int = 64 << 20
    """Bytes of answers made for one principal and not yet read by its client
    (``STIGMER_MAX_UNSENT_BYTES_PER_CALLER``, where tokens are required): its next call is
    refused until its client reads them (``unsent_answers``)."""
    unsent_bytes_per_org: int = 256 << 20
    """The same for the principals of one org together (``STIGMER_MAX_UNSENT_BYTES_PER_ORG``): an
    org's admin can make more tokens, and half of the total leaves the other half to every
    other org."""
    unsent_bytes: int = 512 << 20
    """The same for every principal together (``STIGMER_MAX_UNSENT_BYTES``)."""
    health_watches: int = 256
    """Health Watch streams open at once (``STIGMER_MAX_HEALTH_WATCHES``); the next is refused.
    They answer without a token; a load balancer holds one or a few per daemon."""
    request_read_seconds: float = request_read.DEFAULT_SECONDS
    """On grpc's sync server, how long a call may wait for its request message once its
    headers are in (``STIGMER_REQUEST_READ_TIMEOUT``); past it the call ends DEADLINE_EXCEEDED
    and its thread is free (``request_read``)."""

    unread_calls_per_caller: int | None = None
    """Calls of one token's principal counted at once on each of the sync server's read, rpc and
    stream pools, or, when set, over all of the asyncio server's calls, which keep no share
    unless it is set (``STIGMER_MAX_UNREAD_CALLS_PER_CALLER``): calls waiting longer
    than ``unread_grace_seconds`` for their request message, and calls that ended without it a
    short while ago; past it the next is refused RESOURCE_EXHAUSTED (``call_limit``). None: half
    of each pool, at least one (2 of 4 read threads, 16 of 32 rpc threads), so no single token
    holds a whole pool with calls that send nothing."""

    unread_calls_per_org: int | None = None
    """As ``unread_calls_per_caller``, for the principals of one org together
    (``STIGMER_MAX_UNREAD_CALLS_PER_ORG``): an org's admin can make more tokens, so one org's
    members could otherwise hold a whole pool together. None: three quarters of each pool, at
    least one (3 of 4 read threads, 24 of 32 rpc threads); on the asyncio server, no share unless
    set."""

    unread_grace_seconds: float | None = None
    """How long a call may wait for its message before it counts against its caller
    (``STIGMER_UNREAD_CALL_GRACE``). None: 1 s, or half the read timeout when that is shorter.
    A client whose large requests trail their headers over a slow link needs more."""

    def __attrs_post_init__(self) -> None:
        request_read.checked(self.request_read_seconds)
        if self.unread_calls_per_caller is not None and self.unread_calls_per_caller < 1:
            raise StartupError(f"{call_limit.ENV} must be at least 1")
        if self.unread_calls_per_org is not None and self.unread_calls_per_org < 1:
            raise StartupError(f"{call_limit.ORG_ENV} must be at least 1")
        grace = self.unread_grace_seconds
        if grace is not None and not (math.isfinite(grace) and 0 < grace <= self.request_read_seconds):
            raise StartupError(
                f"{call_limit.GRACE_ENV} must be above 0 and at most {request_read.ENV} "
                f"({self.request_read_seconds:g} s), not {grace:g}"
            )

    def call_shares(self) -> tuple[int, int]:
        """Threads of the read pool and of the rpc pool one caller's unread calls may hold."""
        reads = self.read_threads or SYNC_LMDB_READ_THREADS
        return call_limit.share(reads, self.unread_calls_per_caller), call_limit.share(self.rpc_threads, self.unread_calls_per_caller)

    def stream_share(self, threads: int) -> int:
        """Threads of the stream pool (``threads`` of them) one caller's unread streams may hold."""
        return call_limit.share(threads, self.unread_calls_per_caller)

    def unread_limit(self, threads: int, where: str) -> CallLimit:
        """The shares of a sync server's pool of ``threads``: one caller's, one org's callers'."""
        return CallLimit(
            call_limit.share(threads, self.unread_calls_per_caller),
            where,
            call_limit.org_share(threads, self.unread_calls_per_org),
        )

    def read_pool_threads(self) -> int:
        return self.read_threads or SYNC_LMDB_READ_THREADS

    def unsent_answers(self) -> UnsentAnswers:
        return UnsentAnswers(self.unsent_bytes_per_caller, self.unsent_bytes, self.unsent_bytes_per_org)

    pending_calls: int = 5000
    """Calls received and not yet started, per daemon (``STIGMER_MAX_PENDING_CALLS``): a burst
    of calls in flight waits in grpc's queue up to this many; past it grpc refuses a growing
    share of the new ones with CANCELLED, and every one past twice as many. grpc's default
    (1,000) refused some of a client's 2,500 calls sent at once, which the calls' limits
    (``rpc_threads``, a group commit) would have answered in turn. A queued call holds what it
    received (at most a stream's flow-control window), so the bound keeps a flood's memory
    bounded too."""

    def options(self) -> list[tuple[str, int]]:
        """grpc server channel arguments for these sizes."""
        return [
            ("grpc.server.max_pending_requests", self.pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", 2 * self.pending_calls),
        ]

    @classmethod
    def from_env(cls, environ: Any = None) -> PoolSizes:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, name in (
            ("read_threads", "STIGMER_READ_THREADS"),
            ("rpc_threads", "STIGMER_RPC_THREADS"),
            ("reflection_streams", "STIGMER_MAX_REFLECTION_STREAMS"),
            ("health_watches", "STIGMER_MAX_HEALTH_WATCHES"),
            ("unsent_bytes_per_caller", unsent_answers.PER_CALLER_ENV),
            ("unsent_bytes_per_org", unsent_answers.PER_ORG_ENV),
            ("unsent_bytes", unsent_answers.TOTAL_ENV),
            ("pending_calls", "STIGMER_MAX_PENDING_CALLS"),
            ("unread_calls_per_caller", call_limit.ENV),
            ("unread_calls_per_org", call_limit.ORG_ENV),
        ):
            raw = env.get(name)
            if not raw:
                continue
            try:
                number = int(raw)
            except ValueError:
                raise StartupError(f"{name}={raw!r} is not a whole number") from None
            least = 0 if field == "read_threads" else 1
            if number < least:
                raise StartupError(f"{name} must be at least {least}")
            if field == "pending_calls" and number > MOST_PENDING_CALLS:
                raise StartupError(f"{name} must be at most {MOST_PENDING_CALLS:,}")
            values[field] = number
        grace = env_numbers.seconds(env, call_limit.GRACE_ENV)
        if grace is not None:
            values["unread_grace_seconds"] = grace
        return cls(**values, request_read_seconds=request_read.read_timeout(env))

    def for_store(self, store: object) -> PoolSizes:
        """These sizes with the read threads settled for ``store``'s engine."""
        if self.read_threads is not None:
            return self
        found = LMDB_READ_THREADS if isinstance(store, LmdbStore) else DATABASE_READ_THREADS
        return attrs.evolve(self, read_threads=found)


SYNC_LMDB_READ_THREADS = 2
"""LMDB reads when the daemon runs grpc's sync server (a plugin's interceptors): a thread
of their own, and a second so a long list page does not hold up every get behind it."""


class _OnPool:
    """A behavior grpc's sync server runs on ``experimental_thread_pool`` rather than its own pool
    (one that answers through a callback, ``experimental_non_blocking``, stays so)."""

    __slots__ = ("behavior", "experimental_non_blocking", "experimental_thread_pool")

    def __init__(self, behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> None:
        self.behavior = behavior
        self.experimental_thread_pool = pool
        self.experimental_non_blocking = bool(getattr(behavior, "experimental_non_blocking", False))

    def __call__(self, *arguments: Any) -> Any:
        return self.behavior(*arguments)


_BEHAVIORS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class ServerPools:
    """The thread pools of one server (threads start only when used); ``reads`` is None
    when reads run on the event loop."""

    def __init__(self, sizes: PoolSizes, max_streams: int, *, name: str = "stigmer") -> None:
        """``sizes.read_threads`` must be settled (``PoolSizes.for_store``)."""
        if sizes.read_threads is None:
            raise ValueError("read_threads is not settled: use PoolSizes.for_store")
        self.sizes = sizes
        self.default = futures.ThreadPoolExecutor(sizes.rpc_threads, thread_name_prefix=f"{name}-rpc")
        self.reads = (
            futures.ThreadPoolExecutor(sizes.read_threads, thread_name_prefix=f"{name}-read")
            if sizes.read_threads
            else None
        )
        self.stream_threads = max(max_streams, 1) + REJECTING_THREADS
        self.streams = futures.ThreadPoolExecutor(self.stream_threads, thread_name_prefix=f"{name}-stream")
        self.health = futures.ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix=f"{name}-health")
        """Health on grpc's sync server (``on_pool``); on the asyncio server it runs on the loop."""
        self.reflection = futures.ThreadPoolExecutor(
            sizes.reflection_streams + REJECTING_THREADS, thread_name_prefix=f"{name}-reflection"
        )
        """Reflection streams on grpc's sync server: one thread each up to the bound, and room
        to refuse the next at once."""

    def route(
        self,
        service: str,
        handlers: dict[str, grpc.RpcMethodHandler],
        reads: Collection[str],
        queued: Mapping[str, Callable[..., Any]],
        bound: async_calls.ReadBound,
        admit: async_calls.Admit | None = None,
        inline: Collection[str] = (),
        answers: UnsentAnswers | None = None,
    ) -> dict[str, grpc.RpcMethodHandler]:
        """``handlers`` as aio handlers: each path in ``reads`` on the read pool (or inline),
        each path in ``queued`` as the aio behavior given there, each stream in ``inline`` on
        the loop and every other stream on the stream pool, every other call on the rpc pool;
        each call's caller refused by ``admit`` before its message is read, and the message
        read within ``bound``; each unary answer counted in ``answers`` until its call ends."""
        routed: dict[str, grpc.RpcMethodHandler] = {}
        for name, handler in handlers.items():
            path = f"/{service}/{name}"
            if handler.request_streaming:
                raise ValueError(f"{path}: the framework serves no client streams")
            if handler.response_streaming:
                driven = (
                    async_calls.inline_stream(handler.unary_stream, self.streams)
                    if path in inline
                    else async_calls.stream(handler.unary_stream, self.streams)
                )
                routed[name] = handler._replace(
                    request_streaming=True,
                    unary_stream=None,
                    stream_stream=async_calls.one_request_stream(driven, path, admit, bound),
                )
                continue
            behavior = queued.get(path)
            if behavior is None:
                behavior = async_calls.unary(handler.unary_unary, self.reads if path in reads else self.default)
            counts = answers is not None and admit is not None
            routed[name] = handler._replace(
                request_streaming=True,
                unary_unary=None,
                stream_unary=async_calls.one_request(behavior, path, admit, bound, answers, handler.response_serializer),
                response_serializer=passthrough if counts else handler.response_serializer,
            )
        return routed

    def route_sync(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler], reads: Collection[str]
    ) -> dict[str, grpc.RpcMethodHandler]:
        """``handlers`` for grpc's sync server: each stream on the stream pool, each path in
        ``reads`` on the read pool; the rest run on the server's own pool (``default``)."""
        reads_pool = self.reads or self.sync_reads()
        routed: dict[str, grpc.RpcMethodHandler] = {}
        for name, handler in handlers.items():
            if handler.response_streaming:
                field, pool = ("stream_stream" if handler.request_streaming else "unary_stream"), self.streams
            elif f"/{service}/{name}" in reads and not handler.request_streaming:
                field, pool = "unary_unary", reads_pool
            else:
                routed[name] = handler
                continue
            routed[name] = handler._replace(**{field: _OnPool(getattr(handler, field), pool)})
        return routed

    @staticmethod
    def on_pool(
        handlers: Mapping[str, grpc.RpcMethodHandler], pool: futures.ThreadPoolExecutor
    ) -> dict[str, grpc.RpcMethodHandler]:
        """``handlers`` for grpc's sync server, every one run on ``pool``."""
        routed: dict[str, grpc.RpcMethodHandler] = {}
        for name, handler in handlers.items():
            field = next(f for f in _BEHAVIORS if getattr(handler, f) is not None)
            routed[name] = handler._replace(**{field: _OnPool(getattr(handler, field), pool)})
        return routed

    def sync_reads(self) -> futures.ThreadPoolExecutor:
        """The read pool of a sync server whose reads were settled to run on a loop (0 threads)."""
        if self.reads is None:
            self.reads = futures.ThreadPoolExecutor(SYNC_LMDB_READ_THREADS, thread_name_prefix="stigmer-read")
        return self.reads

    def shutdown(self) -> None:
        for pool in (self.reads, self.streams, self.health, self.reflection, self.default):
            if pool is not None:
                pool.shutdown(wait=False)
