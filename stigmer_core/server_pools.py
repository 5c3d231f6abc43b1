"""The daemon's thread pools: unary reads, other unary calls, and streams.

The sync gRPC server runs every call on a pool thread, and each thread that
waits (on the database, on a group commit, on a stream's next event) gives up
the GIL and takes it back. A thread per call in flight is what writes need:
a create waits on the group commit, so the more callers wait together, the
more share one durable commit. Reads are the opposite: a read holds the GIL
but for its round trip to the store, so threads past a few only hand the GIL
around (kernel time: futex calls). Measured here with 32 gets in flight from
h2load: an LMDB daemon answered 7,200-8,100 gets/s on 1 read thread, 7,100-8,300
on 2, 5,600-6,900 on 4 and 5,000-5,800 on 32; two PostgreSQL daemons about 1.4x
as many on 4 read threads as on 16. Over a database across a network a read
thread waits a longer round trip, so more of them pay: raise
``STIGMER_READ_THREADS`` toward the store's connection pool. Streams hold
their thread for as long as they are open. So each has its own pool, chosen
per method: grpcio runs a behavior on the executor named by its
``experimental_thread_pool``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from concurrent import futures
from typing import Any

import attrs
import grpc

from stigmer_core.errors import StartupError
from stigmer_core.store.lmdb_store import LmdbStore

REJECTING_THREADS = 4
"""Stream threads past the stream limit: room to refuse the next stream at once."""


LMDB_READ_THREADS = 2
"""An LMDB read never waits on I/O, so threads past one only take the GIL from each other
(py-lmdb gives it up around every get); a second keeps a long list page from holding up
every get behind it."""
DATABASE_READ_THREADS = 4
"""A read on a database server waits a round trip, so a few overlap their waits."""


@attrs.frozen
class PoolSizes:
    """Threads per pool; ``STIGMER_READ_THREADS`` and ``STIGMER_RPC_THREADS`` override the defaults."""

    read_threads: int | None = None
    """Unary reads (get, list, getByReference, a kind's own reads) running at once; the rest
    queue. None: the store engine's (``for_store``)."""
    rpc_threads: int = 32
    """Every other unary call (writes, health, reflection) running at once: writes waiting on one
    group commit share it, so this bounds how many a commit can carry."""

    @classmethod
    def from_env(cls, environ: Any = None) -> PoolSizes:
        env = os.environ if environ is None else environ
        values = {}
        for field, name in (("read_threads", "STIGMER_READ_THREADS"), ("rpc_threads", "STIGMER_RPC_THREADS")):
            raw = env.get(name)
            if not raw:
                continue
            try:
                number = int(raw)
            except ValueError:
                raise StartupError(f"{name}={raw!r} is not a whole number") from None
            if number < 1:
                raise StartupError(f"{name} must be at least 1")
            values[field] = number
        return cls(**values)

    def for_store(self, store: object) -> PoolSizes:
        """These sizes with the read threads settled for ``store``'s engine."""
        if self.read_threads is not None:
            return self
        found = LMDB_READ_THREADS if isinstance(store, LmdbStore) else DATABASE_READ_THREADS
        return attrs.evolve(self, read_threads=found)


class _OnPool:
    """A behavior grpcio runs on ``experimental_thread_pool`` rather than the server's pool."""

    __slots__ = ("behavior", "experimental_thread_pool")

    def __init__(self, behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> None:
        self.behavior = behavior
        self.experimental_thread_pool = pool

    def __call__(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.behavior(request, context)


class ServerPools:
    """The three pools of one server; ``default`` is the one handed to ``grpc.server``."""

    def __init__(self, sizes: PoolSizes, max_streams: int, *, name: str = "stigmer") -> None:
        """``sizes.read_threads`` must be settled (``PoolSizes.for_store``)."""
        if sizes.read_threads is None:
            raise ValueError("read_threads is not settled: use PoolSizes.for_store")
        self.sizes = sizes
        self.default = futures.ThreadPoolExecutor(sizes.rpc_threads, thread_name_prefix=f"{name}-rpc")
        self.reads = futures.ThreadPoolExecutor(sizes.read_threads, thread_name_prefix=f"{name}-read")
        self.streams = futures.ThreadPoolExecutor(
            max(max_streams, 1) + REJECTING_THREADS, thread_name_prefix=f"{name}-stream"
        )

    def route(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler], reads: Collection[str]
    ) -> dict[str, grpc.RpcMethodHandler]:
        """``handlers`` with each stream on the stream pool and each path in ``reads`` on the read pool."""
        routed: dict[str, grpc.RpcMethodHandler] = {}
        for name, handler in handlers.items():
            if handler.response_streaming:
                field, pool = ("stream_stream" if handler.request_streaming else "unary_stream"), self.streams
            elif f"/{service}/{name}" in reads and not handler.request_streaming:
                field, pool = "unary_unary", self.reads
            else:
                routed[name] = handler
                continue
            behavior = getattr(handler, field)
            routed[name] = handler._replace(**{field: _OnPool(behavior, pool)})
        return routed

    def shutdown(self) -> None:
        for pool in (self.reads, self.streams, self.default):
            pool.shutdown(wait=False)
