"""The daemon notices a client that vanished without closing, and lets runners ping it.

A stream's slot stayed taken until TCP gave up on a silent peer (hours), and a
client keepalive shorter than grpc's default ping policy (five minutes without
data) had the connection closed with GOAWAY too_many_pings, ending every
stream on it with a misleading RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.client import network_channel
from stigmer_core.errors import StartupError
from stigmer_core.keepalive import ClientKeepalive, Keepalive
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server, large_buffers_returned
from stigmer_core.store.lmdb_store import LmdbStore

BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK


def _app(tmp_path: Path, **streams: int) -> Application:
    """Bookmarks far apart: a connection whose stream sends nothing for a while, as a runner's
    watch of a quiet kind (grpc counts pings against a connection sending no data)."""
    pm = plugin_manager()
    settings = StreamSettings(bookmark_seconds=120, poll_seconds=0.2, **streams)
    return Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm, streams=settings)


def _pinging(address: str) -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.keepalive_time_ms", 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted-interval", "default-interval"])
def test_a_client_pinging_within_the_accepted_interval_keeps_its_streams(tmp_path: Path, accepted: bool) -> None:
    app = _app(tmp_path)
    keepalive = Keepalive(client_ping_seconds=0.5) if accepted else Keepalive()
    server = Server(app, "127.0.0.1:0", keepalive=keepalive)
    server.start()
    try:
        with _pinging(server.address) as channel:
            stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=8)
            assert next(stream).type == BOOKMARK
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)  # nothing more comes: the deadline ends it, unless the server closes first
            if accepted:
                assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            else:  # a ping every second against the default 10 s: GOAWAY too_many_pings
                # (grpc's C core shows it as UNAVAILABLE "Too many pings", grpc-js as RESOURCE_EXHAUSTED)
                assert "too many pings" in (ended.value.details() or "").lower(), ended.value
    finally:
        server.stop(grace=1)
        app.close()


def test_keepalive_settings_come_from_the_environment_and_bad_ones_stop_the_start() -> None:
    found = Keepalive.from_env({"STIGMER_KEEPALIVE_SECONDS": "30", "STIGMER_CLIENT_PING_SECONDS": "5"})
    assert found == Keepalive(time_seconds=30, client_ping_seconds=5)
    assert ("grpc.keepalive_time_ms", 30_000) in found.options()
    with pytest.raises(StartupError, match="STIGMER_KEEPALIVE_TIMEOUT_SECONDS"):
        Keepalive.from_env({"STIGMER_KEEPALIVE_TIMEOUT_SECONDS": "soon"})
    for bad in ("0", "-1", "nan", "inf", "1e10", "0.0001"):  # inf and 1e10 overflowed grpc's millisecond count
        with pytest.raises(
            StartupError, match=r"STIGMER_CLIENT_PING_SECONDS must be from 0\.001 to 2,147,483\.647 seconds"
        ):
            Keepalive.from_env({"STIGMER_CLIENT_PING_SECONDS": bad})
    assert ("grpc.keepalive_timeout_ms", 2**31 - 1) in Keepalive.from_env(
        {"STIGMER_KEEPALIVE_TIMEOUT_SECONDS": "2147483.647"}
    ).options()


class _Cable:
    """A TCP relay on 127.0.0.1 that can be cut without closing anything: after ``cut`` it
    forwards no byte either way and keeps both sockets open, as a network that drops packets
    does (a laptop's lid closed, a firewall's state lost). Neither end sees a FIN or RST."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            near, _ = self._listener.accept()
        except OSError:
            return
        far = socket.create_connection(self._upstream)
        self._sockets += [near, far]
        for source, sink in ((near, far), (far, near)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._cut.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data or self._cut.is_set():
                return  # cut: what arrived is dropped and nothing is closed
            try:
                sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        self._cut.set()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def cable() -> Iterator[Callable[[str], _Cable]]:
    made: list[_Cable] = []

    def make(upstream: str) -> _Cable:
        made.append(_Cable(upstream))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_a_stream_whose_client_vanished_without_closing_gives_back_its_slot(
    tmp_path: Path, cable: Callable[[str], _Cable]
) -> None:
    """One stream slot in all: a watch over a cable that is then cut (no FIN, no RST) holds it
    until the daemon's keepalive ping goes unanswered and it closes the connection; then a
    watch over a sound connection opens. With grpc's defaults the slot stayed taken until TCP
    gave up, hours later."""
    app = _app(tmp_path, max_streams=1)
    server = Server(app, "127.0.0.1:0", keepalive=Keepalive(time_seconds=0.5, timeout_seconds=0.5))
    server.start()
    wire = cable(server.address)
    try:
        with grpc.insecure_channel(wire.address) as far, grpc.insecure_channel(server.address) as near:
            held = watch_pb2_grpc.WatchStub(far).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=60)
            assert next(held).type == BOOKMARK
            refused = watch_pb2_grpc.WatchStub(near).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=5)
            with pytest.raises(grpc.RpcError) as full:
                next(refused)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the one slot is held
            wire.cut()
            deadline = time.monotonic() + 30  # keepalive needs about a second; generous for a loaded machine
            while True:
                stream = watch_pb2_grpc.WatchStub(near).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=5)
                try:
                    assert next(stream).type == BOOKMARK
                    stream.cancel()
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    assert time.monotonic() < deadline, "the vanished client's stream kept its slot"
                    time.sleep(0.2)
    finally:
        server.stop(grace=1)
        app.close()


def test_a_client_watch_ends_when_its_daemon_goes_silent(tmp_path: Path, cable: Callable[[str], _Cable]) -> None:
    """A runner's watch through ``network_channel`` over a cable then cut: the channel's own
    keepalive ends the stream with UNAVAILABLE, which the runner answers by reconnecting; the
    stream's deadline (30 s) is there only to end the test if it does not."""
    app = _app(tmp_path)
    server = Server(app, "127.0.0.1:0", keepalive=Keepalive(client_ping_seconds=0.5))
    server.start()
    wire = cable(server.address)
    try:
        with network_channel(wire.address, keepalive=ClientKeepalive(time_seconds=0.5, timeout_seconds=0.5)) as channel:
            stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=30)
            assert next(stream).type == BOOKMARK
            wire.cut()
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    finally:
        server.stop(grace=1)
        app.close()


def test_a_connection_holds_at_most_its_share_of_calls_and_a_grpc_client_waits_for_one(tmp_path: Path) -> None:
    """With no bound on a connection's calls, grpc's C core does not defend itself against a client
    resetting streams as fast as it opens them (HTTP/2 rapid reset): one tokenless connection had
    every other client's calls cancelled. A grpc client past the bound waits for a free call."""
    app = _app(tmp_path)
    server = Server(app, "127.0.0.1:0", keepalive=Keepalive(calls_per_connection=2))
    server.start()
    try:
        # grpc's channels to one address share one connection unless told not to
        own = [("grpc.use_local_subchannel_pool", 1)]
        with (
            grpc.insecure_channel(server.address, options=own) as busy,
            grpc.insecure_channel(server.address, options=own) as other,
        ):
            watches = [watch_pb2_grpc.WatchStub(busy).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=60) for _ in range(2)]
            for watch in watches:
                assert next(watch).type == BOOKMARK
            third = watch_pb2_grpc.WatchStub(busy).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=1)
            with pytest.raises(grpc.RpcError) as waited:
                next(third)
            assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # it never got a call to run in
            beside = watch_pb2_grpc.WatchStub(other).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=20)
            assert next(beside).type == BOOKMARK, "another connection has calls of its own"
            beside.cancel()
            watches[0].cancel()
            again = watch_pb2_grpc.WatchStub(busy).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=30)
            assert next(again).type == BOOKMARK, "a call freed on the connection is taken"
            again.cancel()
            watches[1].cancel()
    finally:
        server.stop(grace=1)
        app.close()


def test_a_connection_that_never_finishes_its_handshake_is_closed(tmp_path: Path) -> None:
    """A socket that connects and sends nothing held a descriptor for grpc's two minutes:
    thousands of them took every descriptor the daemon had, and no client could connect."""
    app = _app(tmp_path)
    server = Server(app, "127.0.0.1:0", keepalive=Keepalive(handshake_seconds=0.5))
    server.start()
    try:
        host, port = server.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as silent:
            silent.settimeout(30)
            began = time.monotonic()
            while silent.recv(1024):  # the daemon's own SETTINGS frame first, then its close
                pass
            assert time.monotonic() - began < 25, "closed by the handshake bound, not the socket's timeout"
    finally:
        server.stop(grace=1)
        app.close()


@pytest.mark.parametrize(("name", "raw"), [("STIGMER_MAX_CALLS_PER_CONNECTION", "0"), ("STIGMER_MAX_CALLS_PER_CONNECTION", "1.5"), ("STIGMER_MAX_CALLS_PER_CONNECTION", "many"), ("STIGMER_HANDSHAKE_SECONDS", "0")])
def test_connection_settings_are_read_and_checked_at_startup(name: str, raw: str) -> None:
    with pytest.raises(StartupError, match=name):
        Keepalive.from_env({name: raw})
    found = Keepalive.from_env({"STIGMER_MAX_CALLS_PER_CONNECTION": "64", "STIGMER_HANDSHAKE_SECONDS": "5"})
    assert (found.calls_per_connection, found.handshake_seconds) == (64, 5.0)
    assert ("grpc.max_concurrent_streams", 64) in found.options()


def test_the_daemon_raises_its_open_files_limit_to_the_hard_one() -> None:
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from stigmer_core.server import open_files_allowed\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "print(open_files_allowed() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0] or hard)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True", done.stdout + done.stderr


def test_the_daemon_gives_large_request_buffers_back_to_the_system() -> None:
    """glibc raised its mmap threshold once a mapped buffer was freed, after which a large request's
    copies came from its heap, and the small allocations between them kept it from shrinking:
    a team server's RSS grew with each round of large pushes. Here 50 freed 2 MiB buffers with
    small ones kept between them: 100 MiB held without the fix, none with it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from stigmer_core.server import large_buffers_returned\n"
        "def rss():\n"
        "    return next(int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
        "fixed = large_buffers_returned() if sys.argv[1] == 'fix' else False\n"
        "warm = bytearray(8 << 20); del warm\n"
        "base, kept, big = rss(), [], []\n"
        "for _ in range(50):\n"
        "    big.append(bytearray(2 << 20)); kept.append(bytearray(600))\n"
        "for b in big: b[::4096] = bytes(len(b[::4096]))\n"
        "del big\n"
        "print(fixed, rss() - base)\n"
    )
    held = {}
    for variant in ("fix", "plain"):
        done = subprocess.run([sys.executable, "-c", code, variant], capture_output=True, text=True, timeout=60, check=True)
        fixed, grown = done.stdout.split()
        held[variant] = (fixed, int(grown))
    assert held["fix"][0] == "True" and held["fix"][1] < 20, held
    assert held["plain"][1] >= 80, held  # what the fix is for: without it the buffers stay
    env_tuned = large_buffers_returned({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert env_tuned is False, "an operator's own malloc tuning is left as it is"
