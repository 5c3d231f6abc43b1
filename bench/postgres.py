"""``python -m bench.postgres [--quick] [--url URL] [--json PATH]``: the team server over PostgreSQL.

Daemons are real processes (``stigmer serve --store URL``) on one schema, so
two of them do not share a GIL; the client keeps calls in flight with grpc
futures. Each of our rows is set beside raw psycopg transactions of the same
shape on the same server (lock the revision row, check the slug, write the
object, its index and an event, bump the revision, NOTIFY, COMMIT), which
is the cost floor of this design: the ratio is our overhead. Without
``--url`` a throwaway server is started with fsync and synchronous commit on
(Debian's binaries, as the tests use).

Gets from two daemons against one are measured twice: from the Python
client, and from nghttp2's h2load (``bench/h2load.py``) when it is installed,
whose own CPU per call is a few µs where the Python client's is about a
daemon's. Beside them the run prints how many of the machine's cores were
busy, so a ratio bounded by the machine says so.

Watch latency is measured twice. End to end: a client's ``Watch`` stream
open on daemon A while creates are made one at a time on daemon B, from the
create's answer on B to the event's arrival on A's stream (the NOTIFY, A's
dispatcher reading the log, the stream's send). And underneath: a store in
this process waiting in ``wait_for_revision`` while a daemon commits, from
the create's answer to the wake-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
import psycopg_pool

from bench import drive, h2load, machine, round_trips
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.store import keys
from stigmer_core.store.postgres_schema import migrate
from stigmer_core.store.postgres_store import PostgresSettings, PostgresStore
from stigmer_core.testing import postgres

IN_FLIGHT = 32
DESCRIPTION = "x" * 900  # about a 1 KB stored object, the size the design's figures use


def _agent(label: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(
        metadata=metadata_pb2.ApiResourceMetadata(name=f"{label} {uuid.uuid4().hex[:12]}"),
        spec=agent_pb2.AgentSpec(description=DESCRIPTION),
    )


@contextmanager
def _daemon(url: str | None, data_dir: Path) -> Iterator[str]:
    address = f"127.0.0.1:{postgres._free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIGMER_")}
    env["STIGMER_HOME"] = str(data_dir.parent / "home")
    store = ["--store", url] if url else []  # none: LMDB in the data directory
    process = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--address", address, "--data-dir", str(data_dir), *store],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        said = []  # what it logs before its banner (a daemon making its own key warns)
        while "listening on" not in (line := process.stdout.readline()):
            if not line:
                raise RuntimeError(f"daemon did not start: {''.join(said)}")
            said.append(line)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def _window(
    name: str, stubs: Sequence[Any], method: str, request: Callable[[int], Any], budget: dict[str, Any]
) -> Measurement:
    def start(i: int) -> Any:
        return getattr(stubs[i % len(stubs)], method).future(request(i), timeout=30)

    return drive.futures_window(name, start, in_flight=IN_FLIGHT, count=budget["count"], seconds=budget["seconds"])


def _serial(name: str, call: Callable[[int], object], budget: dict[str, Any]) -> Measurement:
    return drive.serial(name, call, count=budget["count"], seconds=budget["seconds"])


class _Raw:
    """psycopg transactions of our shapes, on a schema of their own."""

    def __init__(self, base_url: str) -> None:
        self.settings = PostgresSettings.from_url(postgres.with_schema(base_url, f"raw_{uuid.uuid4().hex[:8]}"))
        s = f'"{self.settings.schema}"'
        with psycopg.connect(self.settings.conninfo, autocommit=True) as conn:
            migrate(conn, self.settings.schema)
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
            self.settings.conninfo, min_size=IN_FLIGHT, max_size=IN_FLIGHT, kwargs={"autocommit": True}, open=True
        )
        self.pool.wait()
        self.schema = s
        self.value = _agent("raw").SerializeToString()

    def create(self, i: int) -> None:
        s = self.schema
        object_id = uuid.uuid4().hex
        with self.pool.connection() as conn, conn.transaction():
            (revision,) = conn.execute(f"SELECT revision FROM {s}.meta WHERE id = 1 FOR UPDATE".encode()).fetchone()  # type: ignore[misc]
            slug = keys.slug_key("agent", "local", object_id)
            conn.execute(f"SELECT value FROM {s}.kv WHERE key = %s".encode(), (slug,)).fetchone()
            conn.execute(
                f"INSERT INTO {s}.kv (key, value) VALUES (%s, %s)".encode(),
                (keys.object_key("agent", object_id), self.value),
            )
            conn.execute(f"INSERT INTO {s}.kv (key, value) VALUES (%s, %s)".encode(), (slug, object_id.encode()))
            conn.execute(
                f"INSERT INTO {s}.events (revision, seq, payload) VALUES (%s, 0, %s)".encode(),
                (revision + 1, self.value),
            )
            conn.execute(
                f"INSERT INTO {s}.event_parts AS p (part, revisions, bytes, compacted) VALUES ('', 1, %s, 0)"
                " ON CONFLICT (part) DO UPDATE SET revisions = p.revisions + 1, bytes = p.bytes + EXCLUDED.bytes".encode(),
                (len(self.value),),
            )
            conn.execute(
                f"UPDATE {s}.meta SET revision = %s, log_bytes = log_bytes + %s,"
                " event_revisions = event_revisions + 1, writes = writes + 1 WHERE id = 1".encode(),
                (revision + 1, len(self.value)),
            )
            conn.execute(b"SELECT pg_notify('raw', %s)", (str(revision + 1),))

    def seed(self, count: int) -> list[bytes]:
        found = []
        for _ in range(count):
            self.create(0)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT key FROM {self.schema}.kv WHERE key >= %s AND key < %s ORDER BY key".encode(),
                (b"o/agent/", b"o/agent0"),
            ).fetchall()
            found = [bytes(k) for (k,) in rows]
        return found

    def get(self, key: bytes) -> None:
        """One statement, as the engine answers a get: the object and the revision it was read at."""
        with self.pool.connection() as conn:
            conn.execute(
                f"SELECT m.revision, m.writes, kv.value FROM {self.schema}.meta AS m"
                f" LEFT JOIN {self.schema}.kv AS kv ON kv.key = %s WHERE m.id = 1".encode(),
                (key,),
            ).fetchall()

    def page(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                f"SELECT m.revision, m.writes, page.key, page.value FROM {self.schema}.meta AS m"
                f" LEFT JOIN LATERAL (SELECT key, value FROM {self.schema}.kv WHERE key >= %s AND key < %s"
                " ORDER BY key LIMIT 101) AS page ON true WHERE m.id = 1 ORDER BY page.key".encode(),
                (b"o/agent/", b"o/agent0"),
            ).fetchall()

    def close(self) -> None:
        self.pool.close()


def _watch_latency(url: str, stub: Any, count: int) -> Measurement:
    """From a create's answer on a daemon to a store in this process waking up.

    0 means the watcher woke before the client had its answer: the NOTIFY left
    with the commit, ahead of the gRPC response.
    """
    latencies: list[float] = []
    with PostgresStore(url) as watcher:
        for _ in range(count):
            seen = watcher.wait_for_revision(0, 0)
            woke: list[float] = []

            def wait(after: int = seen, into: list[float] = woke) -> None:
                watcher.wait_for_revision(after, 10)
                into.append(time.perf_counter())

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.002)
            stub.create(_agent("watched"), timeout=10)
            answered = time.perf_counter()
            waiter.join(timeout=10)
            if woke:
                latencies.append(max(0.0, woke[0] - answered))
    return Measurement.of("watch.wake.cross_daemon", latencies, sum(latencies), 0.0)


def _watch_across(
    watched: grpc.Channel, writer: Any, count: int, name: str = "watch.event.cross_daemon"
) -> Measurement:
    """From a create's answer on one daemon to its ADDED event arriving on a watch opened on the other.

    A negative gap (the event came first: the NOTIFY left with the commit,
    ahead of the create's response) counts as 0.
    """
    stream = watch_pb2_grpc.WatchStub(watched).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=count + 60.0)
    arrived: dict[str, float] = {}
    ready = threading.Condition()

    def read() -> None:
        try:
            for event in stream:
                if event.type == watch_pb2.WATCH_EVENT_TYPE_ADDED:
                    with ready:
                        arrived[event.id] = time.perf_counter()
                        ready.notify_all()
        except grpc.RpcError:
            pass  # cancelled at the end

    first = next(stream)  # the start BOOKMARK: the watch is open
    assert first.type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    latencies: list[float] = []
    begin = time.perf_counter()
    try:
        for _ in range(count):
            created = writer.create(_agent("watched"), timeout=10)
            answered = time.perf_counter()
            object_id: str = created.metadata.id
            with ready:
                if ready.wait_for(lambda: object_id in arrived, timeout=10):  # noqa: B023 - waited on at once
                    latencies.append(max(0.0, arrived[object_id] - answered))
            time.sleep(0.002)
    finally:
        stream.cancel()
        reader.join(timeout=10)
    return Measurement.of(name, latencies, time.perf_counter() - begin, 0.0)


H2LOAD_ROWS = ("h2load.get.1d", "h2load.get.2d")


def _h2load_gets(first: str, second: str, query: Any, object_id: str, *, quick: bool) -> dict[str, Measurement]:
    """Gets of one object from h2load, 32 in flight from two processes: both at daemon A,
    then one at each daemon, alternating, so drift on the machine falls on both rows."""
    request = agent_pb2.AgentId(value=object_id)
    size = query.get(request, timeout=10).ByteSize()
    path = "/stigmer.agentic.agent.v1.AgentQueryController/get"
    rounds: dict[str, list[Measurement]] = {name: [] for name in H2LOAD_ROWS}
    for _ in range(1 if quick else 3):
        for name, targets in zip(H2LOAD_ROWS, ([first, first], [first, second]), strict=True):
            measured, busy = machine.busy_cores(
                lambda name=name, targets=targets: h2load.unary(
                    name, targets, path, request.SerializeToString(), size,
                    in_flight=IN_FLIGHT, seconds=1.0 if quick else 5.0,
                )
            )  # fmt: skip
            rounds[name].append(
                measured if busy is None else measured.with_counters(busy_core_seconds=busy * measured.seconds)
            )
    return {name: Measurement.merge(found) for name, found in rounds.items()}


def _row(m: Measurement) -> str:
    return f"{m.name:<32} {m.calls:>7} {m.calls_per_s:>10.0f}/s  p50 {m.p50_ms:>7.2f} ms  p99 {m.p99_ms:>7.2f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--url", help="an existing server (default: start a durable throwaway one)")
    parser.add_argument("--json", type=Path, help="also write every row and ratio to this file")
    args = parser.parse_args(argv)
    budget = {"count": 200 if args.quick else 3000, "seconds": 2.0 if args.quick else 10.0}
    server = None if args.url else postgres.start_server(durable=True)
    base = args.url or (server.url if server else "")
    work = Path(tempfile.mkdtemp(prefix="stigmer-bench-pg-"))
    rows: dict[str, Measurement] = {}
    url = postgres.with_schema(base, f"bench_{uuid.uuid4().hex[:8]}")
    raw: _Raw | None = None
    try:
        trips = round_trips.per_create(base)
        owned = 50 if args.quick else round_trips.OWNED
        cascade = round_trips.per_cascade_delete(base, owned)
        refused = round_trips.refused_cascade_delete(base, owned, owned // 2)
        raw = _Raw(base)
        keys_ = raw.seed(200)
        rows["raw.create.serial"] = _serial("raw.create.serial", raw.create, budget)
        rows["raw.create.t32"] = drive.threads("raw.create.t32", raw.create, workers=IN_FLIGHT, **budget)
        rows["raw.get.t32"] = drive.threads(
            "raw.get.t32", lambda i: raw.get(keys_[i % len(keys_)]), workers=IN_FLIGHT, **budget
        )
        rows["raw.page100.serial"] = _serial("raw.page100.serial", lambda i: raw.page(), budget)
        raw.close()
        with _daemon(url, work / "a") as first:
            (work / "b").mkdir()
            shutil.copy(work / "a" / "secret.key", work / "b" / "secret.key")
            with _daemon(url, work / "b") as second:
                channels = [grpc.insecure_channel(first), grpc.insecure_channel(second)]
                commands = [agent_grpc.AgentCommandControllerStub(c) for c in channels]
                queries = [agent_grpc.AgentQueryControllerStub(c) for c in channels]
                ids = [commands[0].create(_agent("seed"), timeout=10).metadata.id for _ in range(200)]
                rows["create.1d.serial"] = _serial(
                    "create.1d.serial", lambda i: commands[0].create(_agent("s"), timeout=30), budget
                )
                rows["create.1d.c32"] = _window("create.1d.c32", commands[:1], "create", lambda i: _agent("c"), budget)
                rows["create.2d.c32"] = _window("create.2d.c32", commands, "create", lambda i: _agent("c"), budget)
                get = lambda i: agent_pb2.AgentId(value=ids[i % len(ids)])  # noqa: E731
                rows["get.1d.c32"] = _window("get.1d.c32", queries[:1], "get", get, budget)
                rows["get.2d.c32"] = _window("get.2d.c32", queries, "get", get, budget)
                if h2load.available():
                    rows.update(_h2load_gets(first, second, queries[0], ids[0], quick=args.quick))
                page = agent_pb2.ListAgentsRequest(page_size=100)
                rows["list100.1d.serial"] = _serial(
                    "list100.1d.serial", lambda i: queries[0].list(page, timeout=30), budget
                )
                pages = {"count": max(budget["count"] // 4, 50), "seconds": budget["seconds"]}
                rows["list100.1d.c32"] = _window("list100.1d.c32", queries[:1], "list", lambda i: page, pages)
                rows["list100.2d.c32"] = _window("list100.2d.c32", queries, "list", lambda i: page, pages)
                samples = 50 if args.quick else 300
                rows["watch.event.cross_daemon"] = _watch_across(channels[0], commands[1], samples)
                rows["watch.wake.cross_daemon"] = _watch_latency(url, commands[0], samples)
                for channel in channels:
                    channel.close()
        # the same rows on the embedded engine, for scale
        with _daemon(None, work / "lmdb") as embedded, grpc.insecure_channel(embedded) as channel:
            command = agent_grpc.AgentCommandControllerStub(channel)
            query = agent_grpc.AgentQueryControllerStub(channel)
            ids = [command.create(_agent("seed"), timeout=10).metadata.id for _ in range(200)]
            rows["lmdb.create.c32"] = _window("lmdb.create.c32", [command], "create", lambda i: _agent("c"), budget)
            get = lambda i: agent_pb2.AgentId(value=ids[i % len(ids)])  # noqa: E731
            rows["lmdb.get.c32"] = _window("lmdb.get.c32", [query], "get", get, budget)
            page = agent_pb2.ListAgentsRequest(page_size=100)
            rows["lmdb.list100.serial"] = _serial("lmdb.list100.serial", lambda i: query.list(page, timeout=30), budget)
            rows["lmdb.watch.event"] = _watch_across(channel, command, samples, "lmdb.watch.event")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.destroy()
        else:  # an existing server keeps nothing of the run
            postgres.drop_schema(url)
            if raw is not None:
                postgres.drop_schema(postgres.with_schema(base, raw.settings.schema))
    for m in rows.values():
        print(_row(m))
    ratio = lambda a, b: rows[a].calls_per_s / rows[b].calls_per_s if rows[b].calls_per_s else 0.0  # noqa: E731
    ratios = {
        "create.1d.c32 / raw.create.t32": ratio("create.1d.c32", "raw.create.t32"),
        "create.1d.serial / raw.create.serial": ratio("create.1d.serial", "raw.create.serial"),
        "get.2d.c32 / get.1d.c32": ratio("get.2d.c32", "get.1d.c32"),
        **(
            {"h2load.get.2d / h2load.get.1d": ratio("h2load.get.2d", "h2load.get.1d")}
            if "h2load.get.1d" in rows
            else {}
        ),
        "get.1d.c32 / raw.get.t32": ratio("get.1d.c32", "raw.get.t32"),
        "list100.1d.serial / raw.page100.serial": ratio("list100.1d.serial", "raw.page100.serial"),
        "list100.2d.c32 / list100.1d.c32": ratio("list100.2d.c32", "list100.1d.c32"),
        "create.1d.c32 / lmdb.create.c32": ratio("create.1d.c32", "lmdb.create.c32"),
        "get.1d.c32 / lmdb.get.c32": ratio("get.1d.c32", "lmdb.get.c32"),
        "list100.1d.serial / lmdb.list100.serial": ratio("list100.1d.serial", "lmdb.list100.serial"),
    }
    event, wake = rows["watch.event.cross_daemon"], rows["watch.wake.cross_daemon"]
    print()
    print(
        f"Agent create, from the creating thread:                     {trips['round_trips']:.1f} round trips"
        f" ({trips['statements']:.1f} statements)"
    )
    print(
        f"cascade delete, per object removed ({owned} sessions):          {cascade['round_trips']:.1f} round trips"
        f" ({cascade['statements']:.1f} statements), each with every writer of the schema waiting"
    )
    print(
        f"cascade delete refused for its size ({owned} sessions, limit {owned // 2}):  {refused['round_trips']:.0f} round trips"
        " in all"
    )
    print(
        f"create, 32 in flight, 1 daemon / raw psycopg (32 threads): {ratios['create.1d.c32 / raw.create.t32']:.2f}x  (target >= 0.6)"
    )
    print(
        f"create, serial / raw psycopg serial:                        {ratios['create.1d.serial / raw.create.serial']:.2f}x"
    )
    print(
        f"get, 32 in flight: 2 daemons / 1 daemon:                    {ratios['get.2d.c32 / get.1d.c32']:.2f}x  (target >= 1.5)"
    )
    if "h2load.get.2d / h2load.get.1d" in ratios:
        print(
            f"get, 32 in flight from h2load: 2 daemons / 1 daemon:        {ratios['h2load.get.2d / h2load.get.1d']:.2f}x  (target >= 1.5)"
        )
        busy = {n: rows[n].counters.get("busy_core_seconds", 0.0) / rows[n].seconds for n in H2LOAD_ROWS}
        if all(busy.values()):
            print(
                f"  cores busy on this {machine.cores()}-core machine (database and load included):"
                f" {busy['h2load.get.1d']:.2f} with 1 daemon, {busy['h2load.get.2d']:.2f} with 2"
            )
    else:
        print(f"(no h2load: install {h2load.PACKAGE} for the two-daemon rows without the Python client's CPU)")
    print(f"get, 32 in flight, 1 daemon / raw psycopg (32 threads):     {ratios['get.1d.c32 / raw.get.t32']:.2f}x")
    print(
        f"list page of 100, 1 daemon / raw psycopg page:              {ratios['list100.1d.serial / raw.page100.serial']:.2f}x"
    )
    print(
        f"list page of 100, 32 in flight: 2 daemons / 1 daemon:      {ratios['list100.2d.c32 / list100.1d.c32']:.2f}x"
    )
    print(
        f"watch event, created on B, arrived on A's stream:          p50 {event.p50_ms:.2f} ms  p99 {event.p99_ms:.2f} ms  (target p50 <= 10)"
    )
    for engine_ratio in (
        "create.1d.c32 / lmdb.create.c32",
        "get.1d.c32 / lmdb.get.c32",
        "list100.1d.serial / lmdb.list100.serial",
    ):
        print(f"PostgreSQL / LMDB daemon, {engine_ratio.split(' / ')[0]:<38} {ratios[engine_ratio]:.2f}x")
    embedded_watch = rows["lmdb.watch.event"]
    print(
        f"watch event on one LMDB daemon:                             p50 {embedded_watch.p50_ms:.2f} ms  p99 {embedded_watch.p99_ms:.2f} ms"
    )
    print(
        f"watch wake-up across daemons (store level):                 p50 {wake.p50_ms:.2f} ms  p99 {wake.p99_ms:.2f} ms"
    )
    if args.json is not None:
        doc = {
            "quick": args.quick,
            "rows": {
                name: {
                    "calls": m.calls,
                    "calls_per_s": m.calls_per_s,
                    "p50_ms": m.p50_ms,
                    "p99_ms": m.p99_ms,
                    **(
                        {"busy_cores": m.counters["busy_core_seconds"] / m.seconds}
                        if "busy_core_seconds" in m.counters
                        else {}
                    ),
                }
                for name, m in rows.items()
            },
            "ratios": ratios,
            "create_round_trips": trips,
            "cascade_delete_round_trips": cascade,
            "refused_cascade_delete_round_trips": refused,
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
