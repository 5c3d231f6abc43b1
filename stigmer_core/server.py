"""The network server and the foreground daemon (``stigmer serve``)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stigmer_core.application import Application
from stigmer_core.datadir import DataDirLock
from stigmer_core.errors import AddressUnavailable
from stigmer_core.store.engines import describe as describe_store

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_DATA_DIR = Path("~/.stigmer/data")
MAX_MESSAGE_BYTES = 4 << 20


def default_address() -> str:
    return os.environ.get("STIGMER_ADDRESS", DEFAULT_ADDRESS)


def default_data_dir() -> Path:
    return Path(os.environ.get("STIGMER_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser()


class Server:
    """An Application served over gRPC, with health and reflection.

    Each open server stream holds one thread of the sync server, so the pool
    has ``max_workers`` threads for unary calls on top of one per admitted
    stream (the application's ``StreamLimit``); threads start only when used.
    """

    def __init__(self, app: Application, address: str = DEFAULT_ADDRESS, *, max_workers: int = 32) -> None:
        self.app = app
        pool_size = max_workers + app.stream_limit.limit
        interceptors: list[grpc.ServerInterceptor] = []
        if app.plugin_manager is not None:
            for found in app.plugin_manager.hook.stigmer_server_interceptors():
                interceptors.extend(found or ())
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="stigmer-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        for service, methods in app.services.items():
            self._server.add_registered_method_handlers(service, methods)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        # Not a kind's servicer: grpc's own health service (grpcio-health-checking),
        # registered the way that library documents rather than rewritten here.
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [
            *app.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, self._server)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise AddressUnavailable(f"cannot listen on {address}: the address is in use or not local to this machine")
        host = address.rsplit(":", 1)[0]
        self.address = f"{host}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in self.app.service_names:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, end open streams (UNAVAILABLE: resume elsewhere), and let
        in-flight unary calls finish within ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        stopped = self._server.stop(grace)
        self.app.events.end_streams()
        stopped.wait()

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))


def serve(
    address: str | None = None, data_dir: str | Path | None = None, *, grace: float = 10.0, store: str | None = None
) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; return an exit code.

    ``store`` is a PostgreSQL URL to serve the team server's database (every
    daemon on it serves the same data) or None for LMDB in ``data_dir``.
    """
    address = address or default_address()
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    lock = DataDirLock(data_dir)
    lock.acquire()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    app = None
    try:
        app = Application.open(data_dir, store=store)
        server = Server(app, address)
        server.start()
        lock.record(address=server.address)
        kinds = ", ".join(k.name for k in app.registry.kinds)
        where = describe_store(store) if store else data_dir
        print(f"stigmer daemon listening on {server.address} (data: {where}; kinds: {kinds})", flush=True)
        stop.wait()
        print("stigmer daemon stopping: draining in-flight calls", flush=True)
        server.stop(grace)
        return 0
    finally:
        if app is not None:
            app.close()
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
