"""Open server streams never starve unary calls; past the stream limit, RESOURCE_EXHAUSTED; stop ends streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store import open_store
from tests.agent_execution_support import Kinds, details_of
from tests.auth_support import ALPHA, BETA, make_token, with_token

BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
DEADLINE = 60.0  # generous: these calls must answer, not answer fast
KINDS = ("Agent", "AgentExecution", "Session", "Skill", "Workflow")


def _watch(channel: grpc.Channel, kind: str = "Agent") -> Any:
    stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind=kind), timeout=120)
    assert next(stream).type == BOOKMARK  # open and admitted
    return stream


def _reopen(channel: grpc.Channel) -> Any:
    """A watch opened once a cancelled one's slot is free: the server notices a cancel within a poll interval."""
    for _ in range(300):
        try:
            return _watch(channel)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(0.1)
    raise AssertionError("the cancelled stream's slot was never freed")


def _app(tmp_path: Path, store: str | None, **settings: Any) -> Application:
    """On LMDB in ``tmp_path`` when ``store`` is None, else on that PostgreSQL URL (``stigmer_store``)."""
    pm = plugin_manager()
    return Application(
        build_registry(pm), open_store(store or tmp_path, durable=False), pm, streams=StreamSettings(**settings)
    )


def test_500_open_streams_leave_unary_calls_and_health_answering(tmp_path: Path, stigmer_store: str | None) -> None:
    app = _app(tmp_path, stigmer_store)
    server = Server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    channels = [grpc.insecure_channel(server.address) for _ in range(5)]
    streams: list[Any] = []
    try:
        agents = KindClient(channels[0], app.registry.kind("Agent"))
        known = agents.create(agent_pb2.Agent(metadata={"name": "before"}))
        for i in range(500):
            streams.append(_watch(channels[i % 5], KINDS[i % len(KINDS)]))
        assert agents.call("get", agent_pb2.AgentId(value=known.metadata.id), timeout=DEADLINE) == known
        made = agents.call("create", agent_pb2.Agent(metadata={"name": "during"}), timeout=DEADLINE)
        health = health_pb2_grpc.HealthStub(channels[1]).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        first_agent_watch = streams[0]
        event = next(e for e in first_agent_watch if e.type != BOOKMARK)
        assert event.id == made.metadata.id  # the streams are live, not just parked
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
        server.stop(grace=5)
        app.close()


@pytest.fixture(params=["in-process", "network"])
def limited(
    request: pytest.FixtureRequest, tmp_path: Path, stigmer_store: str | None
) -> Iterator[tuple[Application, grpc.Channel]]:
    app = _app(tmp_path, stigmer_store, max_streams=3, poll_seconds=0.2)
    if request.param == "in-process":
        yield app, app.channel()
    else:
        server = Server(app, "127.0.0.1:0", max_workers=4)
        server.start()
        channel = grpc.insecure_channel(server.address)
        yield app, channel
        channel.close()
        server.stop(grace=1)
    app.close()


def test_the_stream_past_the_limit_is_refused(limited: tuple[Application, grpc.Channel]) -> None:
    app, channel = limited
    kinds = Kinds.on(app, channel)
    agent = kinds.agents.create(agent_pb2.Agent(metadata={"name": "bot"}))
    execution = kinds.execution(agent_id=agent.metadata.id)
    streams = [_watch(channel) for _ in range(3)]
    code, text = details_of(lambda: next(_watch(channel)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 3" in text and "STIGMER_MAX_STREAMS" in text
    subscribe = ae.SubscribeAgentExecutionInput(execution_id=execution.metadata.id)
    code, _ = details_of(lambda: next(kinds.executions.call("subscribe", subscribe)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # a kind's own streams count too
    assert kinds.agents.get(agent.metadata.id) == agent  # unary calls are not limited
    streams.pop().cancel()
    streams.append(_reopen(channel))
    assert len(streams) == 3
    for stream in streams:
        stream.cancel()


def test_stopping_the_server_ends_open_streams(tmp_path: Path, stigmer_store: str | None) -> None:
    app = _app(tmp_path, stigmer_store)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    streams = [_watch(channel, kind) for kind in KINDS]
    agents = KindClient(channel, app.registry.kind("Agent"))
    agents.create(agent_pb2.Agent(metadata={"name": "last"}))
    server.stop(grace=60)  # streams do not hold the grace period: they are told to go
    for stream in streams:
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        details = err.value.details()
        assert "shutting down; watch again with since_revision " in details
        # the same place as ErrorInfo metadata, which a client in any language reads unparsed
        refused = from_rpc_error(err.value)
        assert refused.metadata["sinceRevision"] == details.split("since_revision ", 1)[1].split(" ")[0]
    channel.close()
    app.close()


def test_a_stream_ended_by_a_stop_names_the_field_it_resumes_with(tmp_path: Path, stigmer_store: str | None) -> None:
    """A subscribe was told to "watch again after revision N": subscribe resumes with its own
    after_revision, and a Watch with since_revision, so neither field was named."""
    app = _app(tmp_path, stigmer_store)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    channel = grpc.insecure_channel(server.address)
    kinds = Kinds.on(app, channel)
    run = kinds.execution(agent_id=kinds.agent().metadata.id)
    subscribe = kinds.executions.call(
        "subscribe", ae.SubscribeAgentExecutionInput(execution_id=run.metadata.id), timeout=120
    )
    assert next(subscribe).metadata.id == run.metadata.id  # its state now: the stream is open
    server.stop(grace=60)
    with pytest.raises(grpc.RpcError) as err:
        for _ in subscribe:
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    details = err.value.details()
    assert "call subscribe again with after_revision " in details, details
    assert int(details.rpartition(" ")[2]) >= run.metadata.resource_version
    assert from_rpc_error(err.value).metadata == {"afterRevision": details.rpartition(" ")[2]}
    channel.close()
    app.close()


def test_closing_the_application_ends_in_process_streams(tmp_path: Path, stigmer_store: str | None) -> None:
    app = _app(tmp_path, stigmer_store)
    stream = _watch(app.channel())
    app.close()
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(params=["in-process", "network"])
def quick(
    request: pytest.FixtureRequest, tmp_path: Path, stigmer_store: str | None
) -> Iterator[tuple[Application, grpc.Channel]]:
    app = _app(tmp_path, stigmer_store, max_streams=1, poll_seconds=0.1)
    if request.param == "in-process":
        yield app, app.channel()
    else:
        server = Server(app, "127.0.0.1:0", max_workers=4)
        server.start()
        channel = grpc.insecure_channel(server.address)
        yield app, channel
        channel.close()
        server.stop(grace=1)
    app.close()


def test_cancel_from_another_thread_ends_a_waiting_reader(quick: tuple[Application, grpc.Channel]) -> None:
    _, channel = quick
    stream = _watch(channel)
    outcome: list[grpc.StatusCode] = []

    def reader() -> None:
        try:
            for _ in stream:
                pass
        except grpc.RpcError as exc:
            outcome.append(exc.code())

    thread = threading.Thread(target=reader)
    thread.start()
    stream.cancel()
    thread.join(DEADLINE)
    assert not thread.is_alive() and outcome == [grpc.StatusCode.CANCELLED]
    for _ in range(300):  # its slot comes back (the limit is 1) once the server side has ended
        try:
            _watch(channel).cancel()
            return
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(0.1)
    raise AssertionError("the cancelled stream's slot never came back")


def test_one_caller_holds_at_most_its_share_of_the_streams(tmp_path: Path, stigmer_store: str | None) -> None:
    """One token cannot take every slot: another org's watches still open, and a refused
    caller (a bad token) takes none."""
    pm = plugin_manager()
    app = Application(
        build_registry(pm),
        open_store(stigmer_store or tmp_path, durable=False),
        pm,
        streams=StreamSettings(max_streams=5, max_streams_per_caller=2, poll_seconds=0.2),
        require_auth=True,
    )
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    viewer, _ = make_token(app, BETA, "viewer")
    admin, _ = make_token(app, ALPHA, "admin")
    streams: list[Any] = []
    try:
        with grpc.insecure_channel(server.address) as plain:
            mine = with_token(plain, viewer)
            streams += [_watch(mine), _watch(mine)]
            code, text = details_of(lambda: next(_watch(mine)))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "STIGMER_MAX_STREAMS_PER_CALLER" in text
            for _ in range(5):
                assert details_of(lambda: next(_watch(with_token(plain, "stg_" + "x" * 43))))[0] == (
                    grpc.StatusCode.UNAUTHENTICATED
                )
            streams += [_watch(with_token(plain, admin)), _watch(with_token(plain, admin))]
            streams.append(_watch(app.channel()))  # the local administrator: the last slot of all
            code, text = details_of(lambda: next(_watch(app.channel())))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 5" in text
            streams.pop(0).cancel()
            streams.append(_reopen(mine))
            assert len(streams) == 5
            for stream in streams:
                stream.cancel()
    finally:
        server.stop(grace=1)
        app.close()


@pytest.mark.parametrize("sync_server", [False, True], ids=["asyncio-server", "sync-server"])
def test_a_cancelled_stream_frees_its_slot_before_its_thread_next_looks(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch, sync_server: bool
) -> None:
    """A stream's thread looks whether its caller is still there every poll interval (6 s
    here); its slot must not wait for that: a client reconnecting after a cancel is let in."""
    if sync_server:
        monkeypatch.setenv("STIGMER_READ_THREADS", "2")  # any read thread puts an LMDB daemon on the sync server
    else:
        monkeypatch.setenv("STIGMER_READ_THREADS", "0")  # LMDB's default; what puts a PostgreSQL one on asyncio
    app = _app(tmp_path, stigmer_store, max_streams=1, poll_seconds=6.0, bookmark_seconds=60.0)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    assert server.asynchronous is not sync_server
    try:
        with grpc.insecure_channel(server.address) as channel:
            first = _watch(channel)
            first.cancel()
            deadline = time.monotonic() + 3  # half the 6 s the parked thread takes to look
            while True:
                try:
                    second = _watch(channel)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "the slot waited for the stream's thread"
                    time.sleep(0.05)
            second.cancel()
    finally:
        server.stop(grace=0)
        app.close()


def test_one_org_holds_at_most_its_share_whatever_its_number_of_tokens(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """An org's admin makes tokens: with a share per caller only, one org's many tokens took every
    slot and another org's runners could not watch for work."""
    pm = plugin_manager()
    app = Application(
        build_registry(pm),
        open_store(stigmer_store or tmp_path, durable=False),
        pm,
        streams=StreamSettings(max_streams=6, max_streams_per_caller=2, max_streams_per_org=3, poll_seconds=0.2),
        require_auth=True,
    )
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    alpha = [make_token(app, ALPHA, "viewer", f"alpha {i}")[0] for i in range(3)]
    beta, _ = make_token(app, BETA, "runner")
    streams: list[Any] = []
    try:
        with grpc.insecure_channel(server.address) as plain:
            streams += [_watch(with_token(plain, alpha[0])), _watch(with_token(plain, alpha[0]))]
            streams.append(_watch(with_token(plain, alpha[1])))
            code, text = details_of(lambda: next(_watch(with_token(plain, alpha[2]))))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "STIGMER_MAX_STREAMS_PER_ORG" in text
            assert f"org '{ALPHA}'" in text
            streams += [_watch(with_token(plain, beta)), _watch(with_token(plain, beta))]  # another org's share
            streams.pop(0).cancel()
            streams.append(_reopen(with_token(plain, alpha[2])))
            for stream in streams:
                stream.cancel()
    finally:
        server.stop(grace=1)
        app.close()


def test_an_idle_subscribe_ends_when_its_token_is_revoked(
    tmp_path: Path, stigmer_store: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscribe to an execution nobody writes sends nothing, so it never asked again whether its
    token was still good: revoked, it kept its slot and its thread until the execution changed.
    The refusal logs its one line, as a refused call does."""
    from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2

    pm = plugin_manager()
    app = Application(
        build_registry(pm),
        open_store(stigmer_store or tmp_path, durable=False),
        pm,
        streams=StreamSettings(max_streams=10, poll_seconds=0.1),
        require_auth=True,
    )
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    token, made = make_token(app, ALPHA, "viewer", "laptop")
    kinds = Kinds.on(app, app.channel())
    execution = kinds.execution(agent_id=kinds.agent(org=ALPHA).metadata.id, org=ALPHA)
    try:
        with grpc.insecure_channel(server.address) as plain:
            request = ae.SubscribeAgentExecutionInput(execution_id=execution.metadata.id)
            stream = KindClient(with_token(plain, token), app.registry.kind("AgentExecution")).call(
                "subscribe", request, timeout=30
            )
            assert next(stream).metadata.id == execution.metadata.id  # its state now; then nothing comes
            KindClient(app.channel(), app.registry.kind("ApiToken")).call(
                "revoke", apitoken_pb2.ApiTokenId(value=made.metadata.id)
            )
            code, _ = details_of(lambda: next(stream))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        denied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("denied:")]
        assert any("subscribe" in line and "UNAUTHENTICATED" in line for line in denied), denied
    finally:
        server.stop(grace=1)
        app.close()


def _one_revision_of_instances(app: Application, channel: grpc.Channel) -> int:
    """An agent with four instances, deleted: one revision holding four AgentInstance events. Its revision before."""
    from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2

    kinds = Kinds.on(app, channel)
    agent = kinds.agent("wide")
    for n in range(3):
        kinds.instances.create(
            agentinstance_pb2.AgentInstance(
                metadata={"name": f"extra {n}"}, spec=agentinstance_pb2.AgentInstanceSpec(agent_id=agent.metadata.id)
            )
        )
    with app.store.read() as txn:
        before = int(txn.revision)
    kinds.agents.delete(agent.metadata.id)
    return before


def _instances_after(channel: grpc.Channel, revision: int, position: int | None = None) -> Any:
    request = watch_pb2.WatchRequest(kind="AgentInstance", since_revision=revision)
    if position is not None:
        request.since_position = position
    return watch_pb2_grpc.WatchStub(channel).Watch(request, timeout=120)


def test_a_stream_stopped_inside_a_revision_names_the_position_it_resumes_after(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """A page (256 events, or 1 MiB) may end inside a revision; a stop there told the client to
    watch again from the revision before, and it got that revision's first events twice."""
    app = _app(tmp_path, stigmer_store, page_events=1)
    channel = app.channel()
    try:
        before = _one_revision_of_instances(app, channel)
        stream = _instances_after(channel, before)
        assert next(stream).type == BOOKMARK
        first = next(stream)
        assert first.type == watch_pb2.WATCH_EVENT_TYPE_DELETED and first.position == 0
        app.events.end_streams()
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details().endswith(f"since_revision {first.revision} and since_position 0"), (
            err.value.details()
        )
        assert from_rpc_error(err.value).metadata == {"sinceRevision": str(first.revision), "sincePosition": "0"}
        resumed = _instances_after(app.channel(), first.revision, 0)
        opened = next(resumed)
        # every stream's first, here of the revision before: all of it was sent, not all of this one,
        # so a client keeps its own cursor (revision and position) over an older bookmark
        assert opened.type == BOOKMARK and opened.revision == first.revision - 1
        rest = [next(resumed) for _ in range(3)]
        assert [(e.type, e.position) for e in rest] == [(watch_pb2.WATCH_EVENT_TYPE_DELETED, p) for p in (1, 2, 3)]
        resumed.cancel()
    finally:
        app.close()


def test_no_bookmark_goes_back_behind_an_event_sent(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bookmark due while a page ended inside a revision carried the revision before it, after
    events of that revision were sent: a client resuming from it got them again."""
    from stigmer_core.pipeline import watch

    clock = iter(range(0, 10**9, 60))  # every look at the clock: a bookmark interval later
    monkeypatch.setattr(watch, "time", type("Clock", (), {"monotonic": staticmethod(lambda: float(next(clock)))}))
    app = _app(tmp_path, stigmer_store, page_events=1)
    try:
        before = _one_revision_of_instances(app, app.channel())
        stream = _instances_after(app.channel(), before)
        seen: list[tuple[int, int, int]] = []
        while sum(1 for kind, *_ in seen if kind == watch_pb2.WATCH_EVENT_TYPE_DELETED) < 4 or seen[-1][0] != BOOKMARK:
            event = next(stream)
            seen.append((event.type, event.revision, event.position))
        stream.cancel()
        deleted_in = next(revision for kind, revision, _ in seen if kind == watch_pb2.WATCH_EVENT_TYPE_DELETED)
        first_sent = next(i for i, (kind, *_) in enumerate(seen) if kind == watch_pb2.WATCH_EVENT_TYPE_DELETED)
        assert all(revision >= deleted_in for kind, revision, _ in seen[first_sent:] if kind == BOOKMARK), seen
        assert seen[-1] == (BOOKMARK, deleted_in, 0), seen
    finally:
        app.close()


def test_a_watch_ended_by_a_database_that_stops_answering_names_where_to_resume(
    tmp_path: Path, stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon's stop tells a watch where to resume (``sinceRevision``); a database that stopped
    answering ended it UNAVAILABLE without, and its client fell back to an older bookmark."""
    import psycopg

    from stigmer_core.store import postgres_store
    from stigmer_core.store.postgres_settings import PostgresSettings

    monkeypatch.setattr(postgres_store, "LISTEN_SECONDS", 0.2)  # the quiet spell after which it looks
    url = f"{stigmer_postgres_store_url}&health_timeout_ms=1000"
    writer = _app(tmp_path, url)
    try:
        before = _one_revision_of_instances(writer, writer.channel())
    finally:
        writer.close()
    app = _app(tmp_path, url, page_events=1)  # nothing cached: each page of the watch reads the store
    try:
        serving: list[bool] = []
        app.store.on_reachability(serving.append)  # type: ignore[attr-defined]
        stream = _instances_after(app.channel(), before)
        assert next(stream).type == BOOKMARK
        first = next(stream)
        assert first.type == watch_pb2.WATCH_EVENT_TYPE_DELETED and first.position == 0
        with psycopg.connect(PostgresSettings.from_url(url).conninfo, autocommit=True) as holder:
            holder.execute(b"BEGIN")
            holder.execute(f'LOCK TABLE "{app.store.schema}".events IN ACCESS EXCLUSIVE MODE'.encode())  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while False not in serving and time.monotonic() < deadline:
                time.sleep(0.05)
            assert False in serving, serving
            with pytest.raises(grpc.RpcError) as err:
                next(stream)
            holder.execute(b"ROLLBACK")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        details = err.value.details()
        assert details.endswith(f"watch again with since_revision {first.revision} and since_position 0"), details
        metadata = from_rpc_error(err.value).metadata
        assert (metadata["sinceRevision"], metadata["sincePosition"]) == (str(first.revision), "0"), metadata
    finally:
        app.close()


def test_a_watch_names_who_made_each_write_a_delete_too(tmp_path: Path, stigmer_store: str | None) -> None:
    """A DELETED event carries the object as it was, whose audit names its last writer: who
    deleted it was in the log and nowhere a client could read, though security.md sends an
    admin looking into a leaked token to the events for what it wrote."""
    from stigmer_core.api.agentic.environment.v1 import environment_pb2

    pm = plugin_manager()
    app = Application(build_registry(pm), open_store(stigmer_store or tmp_path, durable=False), pm, require_auth=True)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    token, made = make_token(app, ALPHA, "editor", "leaked")
    try:
        with grpc.insecure_channel(server.address) as plain:
            stream = watch_pb2_grpc.WatchStub(app.channel()).Watch(
                watch_pb2.WatchRequest(kind="Environment", org=ALPHA), timeout=60
            )
            assert next(stream).principal == ""  # a bookmark
            local = KindClient(app.channel(), environment_pb2.Environment)
            env = local.create(environment_pb2.Environment(metadata={"name": "shared", "org": ALPHA}))
            KindClient(with_token(plain, token), environment_pb2.Environment).delete(env.metadata.id)
            added, deleted = next(stream), next(stream)
            stream.cancel()
        assert (added.type, added.principal) == (watch_pb2.WATCH_EVENT_TYPE_ADDED, "local")
        assert deleted.type == watch_pb2.WATCH_EVENT_TYPE_DELETED
        assert deleted.principal == f"token:{ALPHA}/{made.metadata.slug}", deleted.principal
        as_was = environment_pb2.Environment.FromString(deleted.object.value)
        assert as_was.status.audit.spec_audit.updated_by.id == "local"  # its last writer, not who deleted it
    finally:
        server.stop(grace=1)
        app.close()
