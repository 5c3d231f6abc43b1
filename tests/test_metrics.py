"""A daemon's Prometheus metrics, scraped over HTTP from a real server on both grpc servers.

Each call of a kind's service counts once, by method and status code, whatever
answered it: a step, the request's validation, a message that does not parse,
the token check, or a client that went away; a stream counts the messages it
sent and is counted when it ends. No series names an org.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.errors import AddressUnavailable
from stigmer_core.kinds.registry import build_registry
from stigmer_core.metrics import Metrics
from stigmer_core.metrics_endpoint import MAX_CONNECTIONS
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_schema import VERSION as SCHEMA_VERSION
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.retention import EventRetention
from tests import engine_support
from tests.auth_support import requiring_tokens, with_token
from tests.engine_support import OpenStore, counted_bytes
from tests.plugin_server_support import GatePlugin

engine = engine_support.engine

DEADLINE = 30.0
AGENTS = "stigmer.agentic.agent.v1.AgentCommandController"
QUERIES = "stigmer.agentic.agent.v1.AgentQueryController"
WATCH = "stigmer.commons.watch.v1.Watch"
FLAVOURS = {"asyncio-server": 0, "sync-server": 2}
"""Read threads: 0 serves on grpc's asyncio server, more on its sync server (a team server's)."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    with urllib.request.urlopen(f"http://{metrics.address}/metrics", timeout=DEADLINE) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def handled(samples: Samples, service: str, method: str, code: str, kind: str = "unary") -> float:
    return value(
        samples, "grpc_server_handled_total", grpc_type=kind, grpc_service=service, grpc_method=method, grpc_code=code
    )


def started(samples: Samples, service: str, method: str, kind: str = "unary") -> float:
    return value(samples, "grpc_server_started_total", grpc_type=kind, grpc_service=service, grpc_method=method)


def eventually(metrics: Metrics, holds: Callable[[Samples], bool]) -> Samples:
    """The first scrape within 15 s in which ``holds``: a call is counted as its handler ends,
    which a refusal's status, sent from inside the handler, may reach its client before; and a
    stream once its server notices its end, which its client's cancel does not wait for."""
    for _ in range(150):
        found = scrape(metrics)
        if holds(found):
            return found
        time.sleep(0.1)
    return found


@contextlib.contextmanager
def served(app: Application, read_threads: int) -> Iterator[tuple[Server, Metrics, grpc.Channel]]:
    metrics = Metrics(app.store)
    server = Server(app, "127.0.0.1:0", pools=PoolSizes(read_threads=read_threads), metrics=metrics)
    metrics.serve("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, metrics, channel
    finally:
        channel.close()
        server.stop(grace=1)
        metrics.close()


def _agent(name: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name))


@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_every_call_counts_once_by_method_and_code(engine: OpenStore, read_threads: int) -> None:
    pm = plugin_manager()
    with Application(build_registry(pm), engine(), pm) as app, served(app, read_threads) as (server, metrics, channel):
        assert server.asynchronous is (read_threads == 0)
        commands, queries = agent_grpc.AgentCommandControllerStub(channel), agent_grpc.AgentQueryControllerStub(channel)
        before = scrape(metrics)
        assert handled(before, AGENTS, "create", "OK") == 0  # listed, at 0, before any call
        made = commands.create(_agent("counted"), timeout=DEADLINE)
        commands.create(_agent("counted too"), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as missing:
            queries.get(agent_pb2.AgentId(value="agt-01m95qhy9tma33femn6bdpm2xg"), timeout=DEADLINE)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as taken:
            commands.create(_agent("counted"), timeout=DEADLINE)
        assert taken.value.code() is grpc.StatusCode.ALREADY_EXISTS
        garbled = channel.unary_unary(f"/{AGENTS}/create")
        with pytest.raises(grpc.RpcError) as malformed:
            garbled(b"\x0a\xff\xff", timeout=DEADLINE)  # a field whose length runs past the message
        assert malformed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert queries.get(agent_pb2.AgentId(value=made.metadata.id), timeout=DEADLINE).metadata.id

        counts = {
            (AGENTS, "create", "OK"): 2,
            (AGENTS, "create", "ALREADY_EXISTS"): 1,
            (AGENTS, "create", "INVALID_ARGUMENT"): 1,
            (QUERIES, "get", "NOT_FOUND"): 1,
            (QUERIES, "get", "OK"): 1,
        }
        found = eventually(metrics, lambda found: all(handled(found, *at) == n for at, n in counts.items()))
        assert {at: handled(found, *at) for at in counts} == counts
        assert started(found, AGENTS, "create") == 4
        timed = {"grpc_type": "unary", "grpc_service": AGENTS, "grpc_method": "create"}
        assert value(found, "grpc_server_handling_seconds_count", **timed) == 4
        assert 0 < value(found, "grpc_server_handling_seconds_sum", **timed) < DEADLINE
        assert value(found, "stigmer_store_commits_total") > value(before, "stigmer_store_commits_total")
        assert value(found, "process_resident_memory_bytes") > 0
        labels = {name for (_, pairs) in found for name, _ in pairs}
        assert not labels & {"org", "principal", "id", "slug", "name"}, labels


@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_a_watch_counts_what_it_sent_and_how_it_ended(tmp_path: Path, read_threads: int) -> None:
    pm = plugin_manager()
    with (
        Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app,
        served(app, read_threads) as (_, metrics, channel),
    ):
        watch = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=DEADLINE)
        bookmark = next(watch)
        assert bookmark.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
        agent_grpc.AgentCommandControllerStub(channel).create(_agent("watched"), timeout=DEADLINE)
        assert next(watch).type == watch_pb2.WATCH_EVENT_TYPE_ADDED
        open_now = scrape(metrics)
        assert value(open_now, "stigmer_streams_open") == 1
        assert started(open_now, WATCH, "Watch", "server_stream") == 1
        assert (
            value(
                open_now,
                "grpc_server_msg_sent_total",
                grpc_type="server_stream",
                grpc_service=WATCH,
                grpc_method="Watch",
            )
            == 2
        )
        # a unary method has no such series: it stayed 0 beside every call a dashboard counted
        unary_sent = [k for k in open_now if k[0] == "grpc_server_msg_sent_total" and ("grpc_type", "unary") in k[1]]
        assert started(open_now, "stigmer.agentic.agent.v1.AgentCommandController", "create") == 1 and not unary_sent
        watch.cancel()

        def ended(samples: Samples) -> bool:
            return handled(samples, WATCH, "Watch", "CANCELLED", "server_stream") == 1

        found = eventually(metrics, ended)
        assert ended(found), {key: v for key, v in found.items() if "Watch" in str(key)}
        assert value(found, "stigmer_streams_open") == 0
        assert handled(found, WATCH, "Watch", "OK", "server_stream") == 0


@pytest.mark.parametrize("read_threads", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_a_call_refused_for_its_token_is_counted_unauthenticated(
    tmp_path: Path, stigmer_store: str | None, read_threads: int
) -> None:
    with requiring_tokens(tmp_path, stigmer_store) as app, served(app, read_threads) as (_, metrics, channel):
        stranger = agent_grpc.AgentQueryControllerStub(with_token(channel, "stg_" + "x" * 43))
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as refused:
                stranger.get(agent_pb2.AgentId(value="agt-01m95qhy9tma33femn6bdpm2xg"), timeout=DEADLINE)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        found = eventually(metrics, lambda found: handled(found, QUERIES, "get", "UNAUTHENTICATED") == 2)
        assert handled(found, QUERIES, "get", "UNAUTHENTICATED") == 2
        assert started(found, QUERIES, "get") == 2


def test_a_team_servers_database_pool_is_shown(stigmer_postgres_store_url: str, tmp_path: Path) -> None:
    store = PostgresStore(stigmer_postgres_store_url, durable=False)
    pm = plugin_manager()
    with Application(build_registry(pm), store, pm) as app, served(app, 2) as (_, metrics, channel):
        agent_grpc.AgentCommandControllerStub(channel).create(_agent("pooled"), timeout=DEADLINE)
        found = scrape(metrics)
        assert value(found, "stigmer_store_reachable") == 1
        assert value(found, "stigmer_database_connections_max") == store.settings.pool_max
        # How many are open depends on the pool's background growth, so a range: it fails for a
        # pool read as never connected (0, though a create just ran) or one past its pool_max.
        assert 1 <= value(found, "stigmer_database_connections") <= store.settings.pool_max
        assert value(found, "stigmer_database_connections_idle") <= value(found, "stigmer_database_connections")
        assert value(found, "stigmer_database_requests_waiting") == 0


def test_a_newer_releases_schema_is_shown_beside_the_version_the_daemon_knows(
    stigmer_postgres_store_url: str,
) -> None:
    """A rolling upgrade's daemon left behind: an alert on seen > known names it, where
    ``stigmer_store_reachable`` alone drops for a database away too."""
    store = PostgresStore(stigmer_postgres_store_url, durable=False)
    pm = plugin_manager()
    with Application(build_registry(pm), store, pm) as app, served(app, 2) as (_, metrics, _channel):
        found = eventually(metrics, lambda found: value(found, "stigmer_store_schema_version") == SCHEMA_VERSION)
        assert value(found, "stigmer_store_schema_version") == SCHEMA_VERSION
        assert value(found, "stigmer_store_schema_version_known") == SCHEMA_VERSION
        with psycopg.connect(store.settings.conninfo, autocommit=True) as conn:  # what a newer release's start does
            conn.execute(
                f'INSERT INTO "{store.schema}".schema_version (version) VALUES (%s)'.encode(), (SCHEMA_VERSION + 1,)
            )
        # no notice: the listener reads the version after LISTEN_SECONDS of silence
        found = eventually(metrics, lambda found: value(found, "stigmer_store_schema_version") == SCHEMA_VERSION + 1)
        assert value(found, "stigmer_store_schema_version") == SCHEMA_VERSION + 1
        assert value(found, "stigmer_store_schema_version_known") == SCHEMA_VERSION
        assert value(found, "stigmer_store_reachable") == 0


def test_bounds_another_daemon_records_are_shown_without_a_write_of_this_ones(
    stigmer_postgres_store_url: str,
) -> None:
    """The schema's retention is what every daemon prunes by: one started with other bounds
    records them, and this daemon's gauges showed its own until it committed a write itself."""
    store = PostgresStore(stigmer_postgres_store_url, durable=False)
    pm = plugin_manager()
    with Application(build_registry(pm), store, pm) as app, served(app, 2) as (_, metrics, _channel):
        first = eventually(metrics, lambda found: value(found, "stigmer_event_log_max_revisions") > 0)
        assert value(first, "stigmer_event_log_max_revisions") != 300
        other = PostgresStore(stigmer_postgres_store_url, durable=False, event_retention=300)  # another daemon's start
        other.close()
        # no write and no notice: the listener reads them after LISTEN_SECONDS of silence
        found = eventually(metrics, lambda found: value(found, "stigmer_event_log_max_revisions") == 300)
        assert value(found, "stigmer_event_log_max_revisions") == 300


def _log(samples: Samples) -> dict[str, float]:
    prefix = "stigmer_event_log_"
    found = {name[len(prefix) :]: v for (name, _), v in samples.items() if name.startswith(prefix)}
    found["revision"] = value(samples, "stigmer_store_revision")
    return found


def test_the_event_logs_fill_and_bounds_are_shown(engine: OpenStore) -> None:
    """Five creates into a log kept to three revisions: two pruned, so a watch can resume from
    revision 2 on; the figures are the store's own, read back from it here."""
    keep = EventRetention(max_revisions=3, max_bytes=1 << 20, max_age_seconds=3600)
    pm = plugin_manager()
    with Application(build_registry(pm), engine(keep), pm) as app, served(app, 2) as (_, metrics, channel):
        commands = agent_grpc.AgentCommandControllerStub(channel)
        empty = _log(scrape(metrics))
        assert (empty["revisions"], empty["bytes"], empty["compacted_revision"]) == (0, 0, 0)
        for i in range(5):
            last = commands.create(_agent(f"logged {i}"), timeout=DEADLINE)
        with app.store.read() as txn:
            revision = txn.revision
            held = {rev for rev, _ in txn.events(0)}
        assert revision == last.metadata.resource_version
        found = _log(scrape(metrics))
        assert found == {
            "revision": revision,
            "revisions": len(held),
            "bytes": counted_bytes(app.store),
            "compacted_revision": min(held) - 1,
            "max_revisions": 3,
            "max_bytes": 1 << 20,
            "max_age_seconds": 3600,
        }
        assert len(held) == 3
        assert found["bytes"] > 0


def test_a_daemon_shows_the_log_another_daemon_on_its_database_wrote(stigmer_postgres_store_url: str) -> None:
    """The daemon scraped writes nothing: what it shows comes from its listener's reads."""
    pm = plugin_manager()
    writer = PostgresStore(stigmer_postgres_store_url, durable=False)
    reader = PostgresStore(stigmer_postgres_store_url, durable=False)
    with (
        Application(build_registry(pm), writer, pm) as app,
        Application(build_registry(pm), reader, pm) as idle,
        served(idle, 2) as (_, metrics, _channel),
    ):
        before, commits = _log(scrape(metrics)), reader.commits  # its own open wrote its kind records
        made = app.channel()
        created = agent_grpc.AgentCommandControllerStub(made).create(_agent("elsewhere"), timeout=DEADLINE)
        revision = created.metadata.resource_version
        assert revision > before["revision"]
        found = eventually(metrics, lambda found: value(found, "stigmer_store_revision") == revision)
        assert _log(found)["revision"] == revision
        assert _log(found)["revisions"] == before["revisions"] + 1
        assert _log(found)["bytes"] == counted_bytes(writer)
        assert reader.commits == commits


def test_an_address_the_endpoint_cannot_take_is_refused(tmp_path: Path) -> None:
    metrics = Metrics(LmdbStore(tmp_path, durable=False))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AddressUnavailable, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            metrics.serve(f"127.0.0.1:{port}")
    for wrong in ("9464", "127.0.0.1:http", "127.0.0.1:70000", ":9464"):
        with pytest.raises(AddressUnavailable, match="give HOST:PORT"):
            metrics.serve(wrong)


def test_a_daemon_without_metrics_does_not_load_them(tmp_path: Path) -> None:
    """prometheus_client is imported by a daemon that serves metrics, and only then."""
    script = f"""
import sys
import threading
from stigmer_core import Application
from stigmer_core.server import Server
with Application.open({str(tmp_path / "data")!r}, durable=False) as app:
    server = Server(app, "127.0.0.1:0")
    server.start()
    server.stop(grace=0)
print(sorted(name for name in sys.modules if name.startswith(("prometheus_client", "stigmer_core.metrics"))))
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert ran.stdout.strip() == "[]", ran.stdout + ran.stderr


def test_clients_that_send_nothing_hold_one_thread_and_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint answers without a token: connections that never send a request must not each
    take a thread (prometheus_client's own server starts one per connection), nor hold the
    endpoint for good."""
    monkeypatch.setenv("STIGMER_REQUEST_READ_TIMEOUT", "0.5")
    metrics = Metrics(LmdbStore(tmp_path, durable=False))
    host, port = metrics.serve("127.0.0.1:0").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=DEADLINE) for _ in range(3)]
    try:
        found = scrape(metrics)  # answered once the silent ones before it were dropped
        assert value(found, "stigmer_streams_open") == 0
        assert [t.name for t in threading.enumerate()].count("stigmer-metrics") == 1
        for conn in idle:
            assert conn.recv(1) == b""  # closed by the endpoint, not by this test
    finally:
        for conn in idle:
            conn.close()
        metrics.close()
    assert _ended("stigmer-metrics")


def test_silent_and_trickling_clients_never_keep_a_scrape_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Served one at a time with a timeout per read, six silent sockets took every scrape down for
    30 s, two hundred for as long as they stayed, and one sending a header line every few seconds
    for as long as it went on."""
    monkeypatch.setenv("STIGMER_REQUEST_READ_TIMEOUT", "60")  # none of them is dropped for its time here
    metrics = Metrics(LmdbStore(tmp_path, durable=False))
    host, port = metrics.serve("127.0.0.1:0").rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=DEADLINE) for _ in range(MAX_CONNECTIONS + 6)]
    trickling = socket.create_connection((host, int(port)), timeout=DEADLINE)
    trickling.sendall(b"GET /metrics HTTP/1.1\r\n")
    try:
        assert value(scrape(metrics), "stigmer_streams_open") == 0  # answered while they all wait
        assert value(scrape(metrics), "stigmer_streams_open") == 0
        for conn in silent[:7]:  # the ones waiting longest made room for the later ones
            assert conn.recv(1) == b""
    finally:
        for conn in [*silent, trickling]:
            conn.close()
        metrics.close()
    assert _ended("stigmer-metrics")


def _ended(name: str) -> bool:
    for _ in range(100):
        if name not in [t.name for t in threading.enumerate()]:
            return True
        time.sleep(0.05)
    return False


def test_calls_through_a_plugins_interceptors_are_counted_as_they_end(tmp_path: Path) -> None:
    """With a plugin's interceptors (the sync server, whose handlers are settled per call), a call
    an interceptor refuses counts with the interceptor's code, and one it lets by with its own."""
    plugin = GatePlugin()
    pm = plugin_manager(plugins=[plugin])
    with (
        Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app,
        served(app, 0) as (server, metrics, channel),
    ):
        assert not server.asynchronous  # interceptors are sync: they bring grpc's sync server
        commands = agent_grpc.AgentCommandControllerStub(channel)
        commands.create(_agent("let by"), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as refused:
            commands.create(_agent("gated"), metadata=(("x-gate", "closed"),), timeout=DEADLINE)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        counts = {(AGENTS, "create", "OK"): 1, (AGENTS, "create", "PERMISSION_DENIED"): 1}
        found = eventually(metrics, lambda found: all(handled(found, *at) == n for at, n in counts.items()))
        assert {at: handled(found, *at) for at in counts} == counts
        assert started(found, AGENTS, "create") == 2
