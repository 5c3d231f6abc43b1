"""Every kind's watch (stigmer.commons.watch.v1.Watch), on the in-process channel and a real server."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from stigmer_core import Application, KindDeclaration, PermissionDenied, Phase, RequestContext, hookimpl, step
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2 as wx
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store.lmdb_store import EventRetention, LmdbStore
from tests.agent_execution_support import IN_PROGRESS, Kinds, details_of
from tests.widget_kind import WidgetPlugin, message
from tests.workflow_helpers import Executions, Stubs, execution, workflow

ADDED = watch_pb2.WATCH_EVENT_TYPE_ADDED
MODIFIED = watch_pb2.WATCH_EVENT_TYPE_MODIFIED
DELETED = watch_pb2.WATCH_EVENT_TYPE_DELETED
BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
TIMEOUT = 30.0


def _watch(channel: grpc.Channel, kind: str, *, timeout: float = TIMEOUT, **fields: Any) -> Any:
    return watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind=kind, **fields), timeout=timeout)


def _events(stream: Any, count: int, *, bookmarks: bool = False) -> list[watch_pb2.WatchEvent]:
    """The next ``count`` events of ``stream`` (bookmarks skipped unless asked for)."""
    found: list[watch_pb2.WatchEvent] = []
    for event in stream:
        if event.type == BOOKMARK and not bookmarks:
            continue
        found.append(event)
        if len(found) == count:
            return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} events")


def _opened(stream: Any) -> int:
    """Wait for the first message (the start BOOKMARK); return its revision."""
    first = next(stream)
    assert first.type == BOOKMARK
    return int(first.revision)


def _agent(name: str, *, org: str = "", labels: dict[str, str] | None = None) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata={"name": name, "org": org, "labels": labels or {}})


def _apps(request: pytest.FixtureRequest, app: Application) -> Iterator[tuple[Application, grpc.Channel]]:
    if request.param == "in-process":
        yield app, app.channel()
    else:
        server = Server(app, "127.0.0.1:0", max_workers=8)
        server.start()
        channel = grpc.insecure_channel(server.address)
        yield app, channel
        channel.close()
        server.stop(grace=1)
    app.close()


@pytest.fixture(params=["in-process", "network"])
def short_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Application, grpc.Channel]]:
    """Every kind plus the test Widget kind; events kept for 50 revisions; bookmarks every 0.2 s."""
    pm = plugin_manager(plugins=[WidgetPlugin()])
    store = LmdbStore(tmp_path, durable=False, retention=EventRetention(max_revisions=50))
    app = Application(build_registry(pm), store, pm, streams=StreamSettings(bookmark_seconds=0.2))
    yield from _apps(request, app)


def test_watch_reports_adds_updates_and_deletes_in_order(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stream = _watch(stigmer_channel, "agents")
    start = _opened(stream)
    stub = KindClient(stigmer_channel, stigmer_app.registry.kind("Agent"))
    created = stub.create(_agent("watched"))
    changed = created.__class__()
    changed.CopyFrom(created)
    changed.spec.description = "now described"
    updated = stub.update(changed)
    deleted = stub.delete(created.metadata.id)
    events = _events(stream, 3)
    stream.cancel()
    assert [e.type for e in events] == [ADDED, MODIFIED, DELETED]
    assert all(e.kind == "Agent" and e.id == created.metadata.id for e in events)
    assert [e.revision for e in events] == [
        created.metadata.resource_version,
        updated.metadata.resource_version,
        events[2].revision,
    ]
    assert start < events[0].revision < events[1].revision < events[2].revision
    decoded = agent_pb2.Agent()  # the kind's own message decodes the event's Any
    assert events[1].object.type_url == "type.googleapis.com/stigmer.agentic.agent.v1.Agent"
    assert events[1].object.Unpack(decoded)
    assert decoded.spec.description == "now described"
    assert events[2].object.Unpack(decoded) and decoded.metadata.id == deleted.metadata.id


def test_filters_apply_as_list_applies_them(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    labelled = _watch(stigmer_channel, "Agent", labels={"team": "a"})
    in_org = _watch(stigmer_channel, "Agent", org="other")
    pending = _watch(stigmer_channel, "AgentExecution", filters={"phase": "EXECUTION_PENDING"})
    tagged = _watch(stigmer_channel, "AgentExecution", filters={"tags": "nightly"})
    for stream in (labelled, in_org, pending, tagged):
        _opened(stream)
    plain = kinds.agents.create(_agent("plain"))
    team = kinds.agents.create(_agent("team-a", labels={"team": "a"}))
    elsewhere = kinds.agents.create(_agent("elsewhere", org="other"))
    run = kinds.execution(agent_id=plain.metadata.id)
    nightly = kinds.execution("nightly", agent_id=plain.metadata.id, tags=["nightly"])
    kinds.report(run.metadata.id, IN_PROGRESS)  # leaves PENDING: DELETED for the phase watch
    kinds.report(run.metadata.id, 0, "progress")  # not PENDING before nor after: not reported
    last = kinds.execution("last", agent_id=plain.metadata.id)
    assert [e.id for e in _events(labelled, 1)] == [team.metadata.id]
    assert [e.id for e in _events(in_org, 1)] == [elsewhere.metadata.id]
    assert [(e.type, e.id) for e in _events(pending, 4)] == [
        (ADDED, run.metadata.id),
        (ADDED, nightly.metadata.id),
        (DELETED, run.metadata.id),
        (ADDED, last.metadata.id),
    ]
    assert [(e.type, e.id) for e in _events(tagged, 1)] == [(ADDED, nightly.metadata.id)]
    for stream in (labelled, in_org, pending, tagged):
        stream.cancel()


def test_an_update_into_or_out_of_the_filter_is_added_or_deleted(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    agents = KindClient(stigmer_channel, stigmer_app.registry.kind("Agent"))
    stream = _watch(stigmer_channel, "Agent", labels={"team": "a"})
    _opened(stream)
    agent = agents.create(_agent("mover"))
    for labels in ({"team": "a"}, {"team": "a", "tier": "1"}, {"team": "b"}, {}):
        changed = agent_pb2.Agent()
        changed.CopyFrom(agent)
        changed.metadata.labels.clear()
        changed.metadata.labels.update(labels)
        agent = agents.update(changed)
    agents.delete(agent.metadata.id)
    marker = agents.create(_agent("marker", labels={"team": "a"}))
    seen = [(e.type, e.id, dict(_unpacked(e).metadata.labels)) for e in _events(stream, 4)]
    stream.cancel()
    assert seen == [
        (ADDED, agent.metadata.id, {"team": "a"}),  # entered the filter
        (MODIFIED, agent.metadata.id, {"team": "a", "tier": "1"}),
        (DELETED, agent.metadata.id, {"team": "b"}),  # left it (the object as written)
        (ADDED, marker.metadata.id, {"team": "a"}),  # the later changes and the delete were outside it
    ]


def _unpacked(event: watch_pb2.WatchEvent) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    assert event.object.Unpack(agent)
    return agent


def test_bad_requests_are_refused_with_the_field(stigmer_channel: grpc.Channel) -> None:
    def first(**fields: Any) -> Any:
        return lambda: next(_watch(stigmer_channel, **fields))

    code, text = details_of(first(kind="gadget"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'gadget' is not a kind" in text
    code, text = details_of(first(kind="AgentExecution", filters={"colour": "red"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "phase" in text and "tags" in text
    code, text = details_of(first(kind="AgentExecution", filters={"phase": "NOT_A_PHASE"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "EXECUTION_PENDING" in text
    code, _ = details_of(first(kind="Agent", since_revision=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, text = details_of(first(kind="Agent", since_revision=10**9))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ahead" in text
    raw = stigmer_channel.unary_stream("/stigmer.commons.watch.v1.Watch/Watch")
    code, text = details_of(lambda: next(raw(b"\xff\xff\xff", timeout=TIMEOUT)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "WatchRequest" in text


def test_resume_from_the_last_revision_received_has_no_gap_and_no_duplicate(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agents = [kinds.agents.create(_agent(f"a{i}")) for i in range(3)]
    stream = _watch(stigmer_channel, "Agent", since_revision=agents[0].metadata.resource_version - 1)
    before = _events(stream, 3)
    assert [e.id for e in before] == [a.metadata.id for a in agents]
    more = [kinds.agents.create(_agent(f"b{i}")) for i in range(4)]
    received = before + _events(stream, 2)
    stream.cancel()  # cut off in the middle of what was written
    for agent in more[2:]:
        kinds.agents.delete(agent.metadata.id)
    resumed = _watch(stigmer_channel, "Agent", since_revision=received[-1].revision)
    assert _opened(resumed) == received[-1].revision
    rest = _events(resumed, 4)
    resumed.cancel()
    whole = received + rest
    revisions = [e.revision for e in whole]
    assert revisions == sorted(set(revisions))  # in order, none twice
    assert [(e.type, e.id) for e in whole] == [
        *((ADDED, a.metadata.id) for a in agents + more),
        *((DELETED, a.metadata.id) for a in more[2:]),
    ]


def test_a_revision_older_than_the_log_is_told_to_relist(short_log: tuple[Application, grpc.Channel]) -> None:
    app, channel = short_log
    agents = KindClient(channel, app.registry.kind("Agent"))
    first = agents.create(_agent("first"))
    for i in range(60):  # the log keeps 50 revisions
        agents.create(_agent(f"n{i}"))
    code, text = details_of(lambda: next(_watch(channel, "Agent", since_revision=first.metadata.resource_version)))
    assert code == grpc.StatusCode.ABORTED
    assert f"revision {first.metadata.resource_version} compacted (oldest retained: " in text
    assert "open a new watch (from now), then list again" in text


def test_bookmarks_carry_the_latest_revision(short_log: tuple[Application, grpc.Channel]) -> None:
    app, channel = short_log
    agents = KindClient(channel, app.registry.kind("Agent"))
    widgets = KindClient(channel, app.registry.kind("Widget"))
    stream = _watch(channel, "Agent")
    start = _opened(stream)
    widget = widgets.create(message("Widget")(metadata={"name": "not-an-agent"}))
    seen = []
    for event in stream:  # a bookmark comes every 0.2 s while nothing matches
        assert event.type == BOOKMARK
        seen.append(event.revision)
        if event.revision >= widget.metadata.resource_version:
            break
    assert seen == sorted(seen) and seen[0] >= start
    agent = agents.create(_agent("after"))
    assert [e.revision for e in _events(stream, 1)] == [agent.metadata.resource_version]
    stream.cancel()


@pytest.fixture(params=["in-process", "network"])
def quick_bookmarks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Application, grpc.Channel]]:
    """Every kind, the whole event log kept; bookmarks every 0.2 s."""
    pm = plugin_manager()
    store = LmdbStore(tmp_path, durable=False)
    app = Application(build_registry(pm), store, pm, streams=StreamSettings(bookmark_seconds=0.2))
    yield from _apps(request, app)


def test_events_a_filter_drops_do_not_hold_bookmarks_back(quick_bookmarks: tuple[Application, grpc.Channel]) -> None:
    """A busy kind whose writes all miss the filter: bookmarks still come while the writes go on."""
    app, channel = quick_bookmarks
    agents = KindClient(channel, app.registry.kind("Agent"))
    stream = _watch(channel, "Agent", labels={"team": "quiet"})
    start = _opened(stream)
    seen = threading.Event()
    written: list[int] = []

    def writer() -> None:
        for i in range(20_000):  # a bound: the test fails if the bookmark only comes once writes stop
            if seen.is_set():
                return
            written.append(agents.create(_agent(f"busy-{i}")).metadata.resource_version)

    thread = threading.Thread(target=writer)
    thread.start()
    bookmark = next(e for e in stream if e.type == BOOKMARK)
    seen.set()
    thread.join(TIMEOUT)
    stream.cancel()
    assert len(written) < 20_000  # it came while the writes went on
    assert start < bookmark.revision <= written[-1]


def test_a_third_party_kind_is_watched_with_no_rpc_of_its_own(short_log: tuple[Application, grpc.Channel]) -> None:
    app, channel = short_log
    widgets = KindClient(channel, app.registry.kind("Widget"))
    stream = _watch(channel, "widgets")
    _opened(stream)
    made = widgets.create(message("Widget")(metadata={"name": "gizmo"}))
    (event,) = _events(stream, 1)
    stream.cancel()
    assert event.object.type_url.endswith(".Widget") and event.kind == "Widget"
    decoded = message("Widget")()
    assert event.object.Unpack(decoded) and decoded == made


def test_secrets_are_redacted_in_events(stigmer_channel: grpc.Channel, stigmer_app: Application) -> None:
    stream = _watch(stigmer_channel, "Environment")
    _opened(stream)
    environments = KindClient(stigmer_channel, stigmer_app.registry.kind("Environment"))
    env = environment_pb2.Environment(metadata={"name": "prod"})
    env.spec.data["TOKEN"].value = "s3cret-value"
    env.spec.data["TOKEN"].is_secret = True
    environments.create(env)
    (event,) = _events(stream, 1)
    stream.cancel()
    shown = environment_pb2.Environment()
    assert event.object.Unpack(shown)
    assert shown.spec.data["TOKEN"].value != "s3cret-value"
    assert b"s3cret-value" not in event.SerializeToString()


class _OnlyOrgA:
    """An authorization plugin: narrows every watch to org 'a', refuses the label team=forbidden."""

    @hookimpl
    def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
        if operation != "watch":
            return []

        @step(Phase.AUTHORIZE)
        def only_org_a(ctx: RequestContext) -> None:
            if ctx.request.labels.get("team") == "forbidden":  # type: ignore[attr-defined]
                raise PermissionDenied("no watching that team")
            ctx.org = "a"

        return [only_org_a]


@pytest.fixture(params=["in-process", "network"])
def authorized(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Application, grpc.Channel]]:
    pm = plugin_manager(plugins=[_OnlyOrgA()])
    app = Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm)
    yield from _apps(request, app)


def test_authorize_steps_of_plugins_run_and_narrow_the_org(authorized: tuple[Application, grpc.Channel]) -> None:
    app, channel = authorized
    agents = KindClient(channel, app.registry.kind("Agent"))
    code, text = details_of(lambda: next(_watch(channel, "Agent", labels={"team": "forbidden"})))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "no watching" in text
    stream = _watch(channel, "Agent")  # asks for every org; the plugin narrows it to 'a'
    _opened(stream)
    agents.create(_agent("b-side", org="b"))
    a_side = agents.create(_agent("a-side", org="a"))
    assert [e.id for e in _events(stream, 1)] == [a_side.metadata.id]
    stream.cancel()


def test_a_reader_far_behind_reads_the_log_in_pages(tmp_path: Path) -> None:
    """More events than the dispatcher caches and a page holds: all arrive, in order."""
    pm = plugin_manager()
    settings = StreamSettings(page_events=4, page_bytes=4096, cache_events=8, cache_bytes=8192)
    with Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm, streams=settings) as app:
        channel = app.channel()
        agents = KindClient(channel, app.registry.kind("Agent"))
        live = _watch(channel, "Agent")
        _opened(live)
        made = [agents.create(_agent(f"bulk-{i}")) for i in range(60)]
        from_start = _watch(channel, "Agent", since_revision=made[0].metadata.resource_version - 1)
        ids = [a.metadata.id for a in made]
        assert [e.id for e in _events(from_start, 60)] == ids
        assert [e.id for e in _events(live, 60)] == ids


def test_the_dispatcher_wakes_only_streams_of_the_kind_written(stigmer_app: Application) -> None:
    hub = stigmer_app.events
    agent_sub, skill_sub = hub.subscribe("Agent"), hub.subscribe("Skill")
    try:
        KindClient(stigmer_app.channel(), stigmer_app.registry.kind("Agent")).create(_agent("wakes"))
        assert agent_sub.wake.wait(TIMEOUT)
        assert not skill_sub.wake.is_set()
    finally:
        hub.unsubscribe(agent_sub)
        hub.unsubscribe(skill_sub)


def test_two_runners_never_claim_one_execution(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    """Each runner watches PENDING executions and claims each with a version-guarded updateStatus."""
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agent = kinds.agents.create(_agent("worker"))
    count = 12
    claims: dict[str, list[str]] = {}
    losses: list[grpc.StatusCode] = []
    lock = threading.Lock()
    ready = threading.Barrier(3)

    def runner(name: str) -> None:
        stream = _watch(stigmer_channel, "AgentExecution", filters={"phase": "EXECUTION_PENDING"})
        _opened(stream)
        ready.wait()
        # bookmarks are skipped, and DELETED when a claimed execution leaves PENDING
        added = (event for event in stream if event.type == ADDED)
        for event in itertools.islice(added, count):
            report = ae.AgentExecutionUpdateStatusInput(
                execution_id=event.id, resource_version=event.revision, status={"phase": IN_PROGRESS}
            )
            try:
                kinds.executions.call("updateStatus", report)
            except grpc.RpcError as exc:
                with lock:
                    losses.append(exc.code())
            else:
                with lock:
                    claims.setdefault(event.id, []).append(name)
        stream.cancel()

    threads = [threading.Thread(target=runner, args=(f"runner-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    ready.wait()
    made = [kinds.execution(f"job-{i}", agent_id=agent.metadata.id) for i in range(count)]
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert sorted(claims) == sorted(e.metadata.id for e in made)
    assert all(len(who) == 1 for who in claims.values()), claims
    assert losses == [grpc.StatusCode.ABORTED] * count  # the other runner's try, every time
    assert {kinds.executions.get(e.metadata.id).status.phase for e in made} == {IN_PROGRESS}


def test_a_client_with_no_generated_code_decodes_events_through_reflection(stigmer_server: Server) -> None:
    """The object's Any names its message; server reflection serves the descriptors to decode it."""
    with grpc.insecure_channel(stigmer_server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "stigmer.commons.watch.v1.Watch" in set(database.get_services())
        stream = _watch(channel, "Agent")
        _opened(stream)
        agents = KindClient(channel, stigmer_server.app.registry.kind("Agent"))
        made = agents.create(_agent("reflected"))
        (event,) = _events(stream, 1)
        stream.cancel()
        pool = descriptor_pool.DescriptorPool(database)
        name = event.object.type_url.rpartition("/")[2]
        dynamic = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()
        dynamic.ParseFromString(event.object.value)
        assert dynamic.metadata.id == made.metadata.id and dynamic.metadata.slug == "reflected"


def test_a_workflow_run_is_claimed_with_a_version_guard_too(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    made = stubs.workflows.create(workflow())
    run = runs.create(execution(workflow_id=made.metadata.id))
    claim = wx.WorkflowExecutionUpdateStatusInput(
        execution_id=run.metadata.id, resource_version=run.metadata.resource_version, status={"phase": IN_PROGRESS}
    )
    claimed = runs.commands.updateStatus(claim)
    assert claimed.status.phase == IN_PROGRESS
    code, text = details_of(lambda: runs.commands.updateStatus(claim))  # the same claim again: stale
    assert code == grpc.StatusCode.ABORTED and f"current: {claimed.metadata.resource_version}" in text


def test_resume_inside_a_revision_with_the_position(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    """A cascade's events share one revision; a client cut off among them resumes after the last it got."""
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agent = kinds.agents.create(_agent("owner"))
    for i in range(3):
        extra = agentinstance_pb2.AgentInstance(metadata={"name": f"extra-{i}"}, spec={"agent_id": agent.metadata.id})
        kinds.instances.create(extra)
    stream = _watch(stigmer_channel, "AgentInstance")
    _opened(stream)
    kinds.agents.delete(agent.metadata.id)  # deletes its 4 instances in one transaction
    first = _events(stream, 2)
    stream.cancel()
    assert {e.type for e in first} == {DELETED} and first[0].revision == first[1].revision
    assert first[0].position < first[1].position
    resumed = _watch(
        stigmer_channel, "AgentInstance", since_revision=first[-1].revision, since_position=first[-1].position
    )
    assert _opened(resumed) == first[-1].revision - 1  # that revision is not complete yet
    rest = _events(resumed, 2)
    resumed.cancel()
    ids = [e.id for e in first + rest]
    assert len(set(ids)) == 4 and {e.revision for e in rest} == {first[0].revision}
    assert [e.position for e in first + rest] == sorted({e.position for e in first + rest})
    code, _ = details_of(lambda: next(_watch(stigmer_channel, "AgentInstance", since_position=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_resuming_after_the_last_event_of_a_revision_starts_with_a_bookmark_of_that_revision(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """The first bookmark said the revision before, though nothing of the kind was left in it: a
    client that kept resuming from bookmarks (a daemon restarted twice) got the same event again."""
    stubs = Kinds.on(stigmer_app, stigmer_channel)
    stream = _watch(stigmer_channel, "Agent")
    _opened(stream)
    made = stubs.agents.create(_agent("once"))  # one revision: the agent, then its default instance
    (event,) = _events(stream, 1)
    stream.cancel()
    assert event.id == made.metadata.id
    resumed = _watch(stigmer_channel, "Agent", since_revision=event.revision, since_position=event.position)
    bookmark = _opened(resumed)
    resumed.cancel()
    assert bookmark == event.revision  # nothing of the kind is left in that revision: the instance is another kind's
    after = event.position + 1  # the instance's: the last event of the revision
    instances = _watch(stigmer_channel, "AgentInstance", since_revision=event.revision, since_position=after)
    assert _opened(instances) == event.revision
    instances.cancel()
    again = _watch(stigmer_channel, "Agent", since_revision=bookmark)
    _opened(again)
    later = stubs.agents.create(_agent("later"))
    (first,) = _events(again, 1)
    again.cancel()
    assert first.id == later.metadata.id  # not the agent the client had already


def test_the_readme_runner_takes_the_backlog_then_new_work_and_keeps_what_it_claimed(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """The README's runner watched "from now" only: executions made while no runner watched stayed
    PENDING forever, and a claim retried after a restart was dropped as lost."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def pending(" in s]
    runner: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), runner)  # the README's own code, run as a user would
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agent = kinds.agents.create(_agent("worker"))
    backlog = kinds.execution(agent_id=agent.metadata.id, name="before")
    work = runner["pending"](stigmer_channel)
    assert next(work) == (backlog.metadata.id, backlog.metadata.resource_version)
    later = kinds.execution(agent_id=agent.metadata.id, name="after")
    assert next(work) == (later.metadata.id, later.metadata.resource_version)
    work.close()
    claim = runner["claim"]
    assert claim(stigmer_channel, later.metadata.id, later.metadata.resource_version)
    assert claim(stigmer_channel, later.metadata.id, later.metadata.resource_version)  # its answer lost: still ours
    runner["RUNNER"] = "another-host:1"
    assert not claim(stigmer_channel, later.metadata.id, later.metadata.resource_version)
    held = kinds.executions.get(later.metadata.id)
    assert held.status.runner != "another-host:1"
    # a run held by another runner, claimed at its current version (as a runner looking for silent
    # runs would): refused FAILED_PRECONDITION, which killed the README's runner; so did a run
    # deleted while PENDING (NOT_FOUND)
    assert not claim(stigmer_channel, later.metadata.id, held.metadata.resource_version)
    kinds.executions.delete(backlog.metadata.id)
    assert not claim(stigmer_channel, backlog.metadata.id, backlog.metadata.resource_version)


def test_the_readme_runner_claims_a_run_edited_after_it_saw_it(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """An editor's label change between the watch's event and the claim made the claim's version
    stale; the runner took every ABORTED as "claimed first by another", skipped the run, and it
    stayed PENDING until some runner restarted. A run another runner claimed stays not its own."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def pending(" in s]
    runner: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), runner)
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    agent = kinds.agents.create(_agent("worker"))
    work = runner["pending"](stigmer_channel)
    made = kinds.execution(agent_id=agent.metadata.id, name="edited")
    seen = next(work)
    work.close()
    assert seen == (made.metadata.id, made.metadata.resource_version)
    edited = ae.AgentExecution()
    edited.CopyFrom(made)
    edited.metadata.labels["team"] = "blue"
    edited = kinds.executions.update(edited)  # an editor, before any runner claimed it
    edited.metadata.labels["team"] = "green"
    kinds.executions.update(edited)
    assert runner["claim"](stigmer_channel, *seen)
    claimed = kinds.executions.get(made.metadata.id)
    assert claimed.status.phase == IN_PROGRESS and claimed.status.runner == runner["RUNNER"]
    # one claimed by another runner after the edit: RUN_CLAIMED, not re-read into a claim of its own
    other = kinds.execution(agent_id=agent.metadata.id, name="taken")
    relabelled = ae.AgentExecution()
    relabelled.CopyFrom(other)
    relabelled.metadata.labels["team"] = "red"
    kinds.executions.update(relabelled)
    first = runner["claim"]
    assert first(stigmer_channel, other.metadata.id, other.metadata.resource_version)  # the first runner
    runner["RUNNER"] = "another-host:2"
    assert not runner["claim"](stigmer_channel, other.metadata.id, other.metadata.resource_version)
    assert kinds.executions.get(other.metadata.id).status.runner != "another-host:2"
    # edited, then deleted before the runner got it again: not its to run, and no error
    gone = kinds.execution(agent_id=agent.metadata.id, name="gone")
    relabelled.CopyFrom(gone)
    relabelled.metadata.labels["team"] = "red"
    kinds.executions.update(relabelled)
    kinds.executions.delete(gone.metadata.id)
    assert not runner["claim"](stigmer_channel, gone.metadata.id, gone.metadata.resource_version)
