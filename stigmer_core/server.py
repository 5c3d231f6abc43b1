"""The network server and the foreground daemon (``stigmer serve``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import attrs
import grpc

from stigmer_core import stop_bound
from stigmer_core.application import Application
from stigmer_core.auth.transport import TlsFiles, check_listen, split_address
from stigmer_core.datadir import DataDirLock
from stigmer_core.errors import AddressUnavailable
from stigmer_core.grpc_servers import AsyncServing, Serving, SyncServing
from stigmer_core.keepalive import Keepalive
from stigmer_core.kinds.releases import fingerprint
from stigmer_core.local_socket import UnixTarget, socket_path
from stigmer_core.plugins import server_interceptors
from stigmer_core.said import announce
from stigmer_core.server_pools import PoolSizes, ServerPools
from stigmer_core.store.engines import describe as describe_store
from stigmer_core.store.retention import EventRetention
from stigmer_core.store_wait import STORE_WAIT_SECONDS, opened_once_reachable

if TYPE_CHECKING:  # prometheus_client is imported by a daemon that serves metrics, and only then
    from stigmer_core.metrics import Metrics

log = logging.getLogger(__name__)


def _bindable(address: str) -> bool:
    """Whether a plain socket can bind ``address``: when grpc cannot, with TLS credentials, the
    credentials are what it refused (it says nothing of why add_port failed)."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host or None, int(port or 0), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, where in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(where)
    except (OSError, ValueError):
        return False
    return True


DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_DATA_DIR = Path("~/.stigmer/data")


def default_address() -> str:
    return os.environ.get("STIGMER_ADDRESS", DEFAULT_ADDRESS)


def default_data_dir() -> Path:
    return Path(os.environ.get("STIGMER_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser()


class Server:
    """An Application served over gRPC, with health and reflection.

    On a store that never waits on I/O (LMDB) it is grpc's asyncio server
    (``grpc_servers``): unary reads run on its event loop and writes queue
    for the group commit from it. On a database, or when a plugin supplies
    server interceptors, it is grpc's sync server: reads run on
    ``pools.read_threads`` threads and other unary calls on ``max_workers``
    (default ``pools.rpc_threads``). Streams take one thread per admitted
    stream (the application's ``StreamLimit``). Threads start only when
    used (``server_pools``). ``tls`` serves the address with TLS (mutual when it
    names a client CA). A non-loopback ``address`` needs TLS and an
    application that requires authentication, or ``insecure_no_auth``;
    otherwise the server refuses before binding anything. ``unix_socket`` also
    serves a Unix socket with mode 0600: the owner's local path, where a call
    without a token is the local administrator even when the address requires one.
    ``metrics`` counts every call of a kind's services (``metrics.Metrics``; its endpoint
    is served apart, by ``Metrics.serve``).
    """

    def __init__(
        self,
        app: Application,
        address: str = DEFAULT_ADDRESS,
        *,
        max_workers: int | None = None,
        pools: PoolSizes | None = None,
        tls: TlsFiles | None = None,
        insecure_no_auth: bool = False,
        unix_socket: Path | None = None,
        keepalive: Keepalive | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        check_listen(address, tls=tls, require_auth=app.authenticator.required, insecure_no_auth=insecure_no_auth)
        credentials = tls.server_credentials(metrics.tls_served if metrics is not None else None) if tls else None
        dated = tls.dates_problem() if tls is not None else None
        if dated is not None:  # served all the same: a renewal may be on its way, and is taken without a restart
            log.warning("TLS: %s", dated[1])
        self.app = app
        # Checked before any thread starts: a wrong one refuses the start, naming its plugin.
        interceptors = server_interceptors(app.plugin_manager) if app.plugin_manager is not None else []
        sizes = (pools or PoolSizes.from_env()).for_store(app.store)
        if max_workers is not None:
            sizes = attrs.evolve(sizes, rpc_threads=max_workers)
        self.pools = ServerPools(sizes, app.stream_limit.limit)
        self._serving: Serving
        options = [*(keepalive or Keepalive.from_env()).options(), *sizes.options()]
        if sizes.read_threads == 0 and not interceptors:
            self._serving = AsyncServing(app, self.pools, options, metrics)
        else:
            self._serving = SyncServing(app, self.pools, interceptors, options, metrics)
        self.asynchronous = isinstance(self._serving, AsyncServing)
        """Whether grpc's asyncio server serves (``grpc_servers``)."""
        try:
            if address.startswith("unix:"):  # a caller on it is the local administrator: the owner's alone
                self._listen_unix(Path(address.removeprefix("unix:")), credentials)
                self.port = 0
                self.address = address
            else:
                try:
                    self.port = self._serving.add_port(address, credentials)
                except RuntimeError:
                    self.port = 0
                if self.port == 0:
                    if tls is not None and _bindable(address):
                        raise AddressUnavailable(
                            f"cannot listen on {address}: grpc refused the TLS certificate {tls.cert} and key "
                            f"{tls.key} (GRPC_VERBOSITY=ERROR in the environment shows its reason)"
                        )
                    raise AddressUnavailable(
                        f"cannot listen on {address}: the address is in use or not local to this machine"
                    )
                host = address.rsplit(":", 1)[0]
                self.address = f"{host}:{self.port}"
            self.tls = tls is not None
            self.unix_socket = self._listen_unix(unix_socket) if unix_socket is not None else None
        except BaseException:
            self._close()
            raise

    def _listen_unix(self, path: Path, credentials: grpc.ServerCredentials | None = None) -> Path:
        if path.is_socket():  # a previous daemon's, left by a crash (never another kind of file)
            path.unlink()
        self._unix_target = target = UnixTarget(path)  # its descriptor kept until the server closes
        previous = os.umask(0o177)  # created 0600: other local users cannot connect
        try:
            bound = self._serving.add_port(target.address, credentials)
        except RuntimeError:
            bound = 0
        finally:
            os.umask(previous)
        if bound == 0:
            raise AddressUnavailable(f"cannot listen on the Unix socket {path}")
        path.chmod(0o600)
        return path

    def start(self) -> None:
        self._serving.start()

    def drain(self) -> None:
        """Answer NOT_SERVING on the health service while still serving every call.

        A load balancer that checks health takes the daemon out of rotation
        before it stops, so calls stop arriving instead of being cut (the
        health service cannot go back to SERVING afterwards: grpc's own rule).
        """
        self._serving.drain()

    def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, end open streams (UNAVAILABLE: resume elsewhere), and let
        in-flight unary calls finish within ``grace`` seconds."""
        self._serving.stop(grace)
        self._close()

    def _close(self) -> None:
        self._serving.close()
        self.pools.shutdown()
        unix = getattr(self, "unix_socket", None)
        if unix is not None:
            unix.unlink(missing_ok=True)
        target = getattr(self, "_unix_target", None)
        if target is not None:
            target.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server stops; True when ``timeout`` passed first (grpc's answer)."""
        return self._serving.wait(timeout)


SIGNAL_POLL_SECONDS = 0.25


def _wait_for_signal(stop: threading.Event, seconds: float | None = None) -> None:
    """Wait until a signal handler sets ``stop`` (or ``seconds`` pass), a short wait at a time.

    The kernel hands a signal sent to the process to any thread that does not block it, grpc's
    own threads included, and Python runs the handler only in the main thread, once that thread
    runs again: a main thread in one untimed wait slept through such a SIGTERM for good (the
    daemon never stopped, nor did `stigmer local stop` or a pod's termination, short of SIGKILL).
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        left = SIGNAL_POLL_SECONDS if deadline is None else min(SIGNAL_POLL_SECONDS, deadline - time.monotonic())
        if left <= 0:
            return
        stop.wait(left)


def open_files_allowed() -> int:
    """Raise this process's soft limit of open files to its hard limit, as a server is expected
    to (Go's runtime does it for every program): each connection holds a descriptor, and the
    soft limit (often 1,024) let a few thousand idle sockets keep every other client out. The
    limit now, or -1 where the platform has none to raise."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a sandbox may refuse: the daemon runs on as it was
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    return int(soft)


MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc's malloc maps a buffer of its own, given back to the system when freed."""


def large_buffers_returned(environ: Mapping[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD``, so large requests' buffers go back to the
    system once freed. glibc raises the threshold as it frees mapped buffers, after which a 3 MiB
    request's copies came from its arenas and stayed: a team server's RSS grew with every round
    of 64 pushes of 3 MiB skills (82 to 893 MiB over five rounds), to 281 MiB with the threshold
    fixed, and peaks fell too (999 against 583 MiB). False, changing nothing, off glibc or when
    the environment tunes malloc itself (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``)."""
    env = os.environ if environ is None else environ
    if "MALLOC_MMAP_THRESHOLD_" in env or "GLIBC_TUNABLES" in env:
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has it
        return False
    m_mmap_threshold = -3  # malloc.h's M_MMAP_THRESHOLD
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD))


def serve(
    address: str | None = None,
    data_dir: str | Path | None = None,
    *,
    grace: float = stop_bound.GRACE_SECONDS,
    stop_limit: float | None = None,
    drain: float = 0.0,
    require_auth: bool = False,
    tls: TlsFiles | None = None,
    insecure_no_auth: bool = False,
    store: str | None = None,
    metrics_address: str | None = None,
    store_wait: float = STORE_WAIT_SECONDS,
) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; return an exit code.

    ``store`` is a PostgreSQL URL to serve the team server's database (every
    daemon on it serves the same data) or None for LMDB in ``data_dir``.
    ``drain`` is how long the first signal keeps the daemon serving with its
    health NOT_SERVING before it stops (a second signal stops it at once).
    ``stop_limit`` (``grace`` + ``stop_bound.STOP_MARGIN_SECONDS`` when None) is how long the
    stop may take before it prints every thread's stack and ends the process (``stop_bound``).
    ``metrics_address`` (``HOST:PORT``) serves Prometheus metrics there over HTTP (``metrics``).
    ``store_wait`` is how long a start waits for a database that does not answer yet.
    """
    address = address or default_address()
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    check_listen(address, tls=tls, require_auth=require_auth, insecure_no_auth=insecure_no_auth)
    open_files_allowed()
    large_buffers_returned()
    lock = DataDirLock(data_dir)
    lock.acquire()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in stop_bound.STOP_SIGNALS}
    app = None
    metrics = None
    armed = False
    try:
        # a daemon's retention settings are the schema's once it starts (docs/design.md, Event retention)
        retention = EventRetention.from_env_if_set()
        app = opened_once_reachable(
            lambda: Application.open(data_dir, store=store, require_auth=require_auth, retention=retention),
            store_wait,
            stop,
        )
        if app is None:
            return 0  # stopped by a signal while waiting: nothing was served
        if metrics_address:
            from stigmer_core.metrics import Metrics

            metrics = Metrics(app.store, {kind.name: str(kind.release or "") for kind in app.registry.kinds})
            metrics.serve(metrics_address)  # first: one that cannot be taken stops the start, and closes below
        server = Server(
            app,
            address,
            tls=tls,
            insecure_no_auth=insecure_no_auth,
            unix_socket=socket_path(data_dir),
            metrics=metrics,
        )
        server.start()  # serving, its health SERVING, before the address is recorded
        lock.record(
            address=server.address,
            tls=server.tls,
            store=describe_store(store) if store else "",
            kinds={kind.name: fingerprint(kind.decl) for kind in app.registry.kinds},
        )
        kinds = ", ".join(k.name for k in app.registry.kinds)
        where = describe_store(store) if store else data_dir
        security = ", ".join(
            part
            for part, on in (
                ("TLS", server.tls),
                ("tokens required", require_auth),
                (
                    "INSECURE: no authentication, every caller is administrator of every org",
                    insecure_no_auth and not require_auth,
                ),
            )
            if on
        )
        scraped = f"; metrics: http://{metrics.address}/metrics" if metrics is not None else ""
        announce(
            f"stigmer daemon listening on {server.address}{f' ({security})' if security else ''} "
            f"(data: {where}; kinds: {kinds}{scraped})"
        )
        _wait_for_signal(stop)
        if drain > 0:
            stop.clear()
            server.drain()
            announce(
                f"stigmer daemon draining: health NOT_SERVING, still serving for {drain:g} s "
                "(another SIGTERM or Ctrl-C stops it now)"
            )
            _wait_for_signal(stop, drain)
        limit = grace + stop_bound.STOP_MARGIN_SECONDS if stop_limit is None else stop_limit
        armed = True
        stop_bound.arm(limit)  # before the line below: once it is printed, a second signal ends the process
        announce(
            f"stigmer daemon stopping: draining in-flight calls (for at most {grace:g} s; "
            "another SIGTERM or Ctrl-C stops it now, and a stop still running after "
            f"{limit:g} s prints every thread's stack and exits 1)"
        )
        server.stop(grace)
        return 0
    finally:
        if metrics is not None:
            metrics.close()
        if app is not None:
            app.close()
        lock.release()
        if armed:
            stop_bound.disarm()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
