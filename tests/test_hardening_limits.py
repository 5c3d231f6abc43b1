"""Size, page, nesting and per-write limits, driven through a real server on 127.0.0.1.

Each test goes past one limit of ``stigmer_core.limits`` and checks the
documented status, that nothing was written (or, for pages, that nothing
was lost), and that the daemon still serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from stigmer_core import Application, InvalidArgument, ResourceExhausted, StartupError, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.executioncontext.v1 import executioncontext_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.ids import new_id
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.nesting import NestingCheck
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.resources import Resources
from stigmer_core.limits import Limits
from stigmer_core.pipeline import validation
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import keys, open_store
from stigmer_core.testing.inspect import raw_keys
from stigmer_plugins.secrets import REDACTED
from tests import workflow_helpers as wf
from tests.agent_execution_support import IN_PROGRESS, PENDING, Kinds
from tests.gizmo_kind import GizmoPlugin
from tests.gizmo_kind import message as gizmo_message
from tests.hardening_support import agent, assert_serving, fails, fields_of, network
from tests.timer_kind import TimerPlugin
from tests.timer_kind import message as timer_message

OK, TOO_BIG, BAD, PRECONDITION = (
    grpc.StatusCode.OK,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.fixture
def served(stigmer_app: Application) -> Iterator[tuple[Application, grpc.Channel]]:
    server, channel = network(stigmer_app)
    yield stigmer_app, channel
    channel.close()
    server.stop(grace=1)


def _big_agent(name: str, size: int) -> agent_pb2.Agent:
    """An agent whose stored form takes about ``size`` bytes (64 MCP server headers of up to 64 KiB each)."""
    made = agent(name)
    server = made.spec.mcp_servers.add(name="big")
    chunk = size // 64
    for i in range(64):
        server.headers[f"h{i}"] = "x" * chunk
    return made


# -- object size: no ghost write ---------------------------------------------------


def test_an_object_over_the_size_limit_is_refused_before_it_is_stored(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    before = raw_keys(app.store)
    limit = app.registry.limits.max_object_bytes
    error = fails(TOO_BIG, lambda: agents.create(_big_agent("ghost", limit + 4096)))
    assert "max_object_bytes" in error.details()
    # the variable an operator sets, as every reason's `setting` names it (an Application's
    # parameter name was given here, the variable for an org's quota and the streams)
    assert from_rpc_error(error).metadata["setting"] == "STIGMER_MAX_OBJECT_BYTES"
    assert raw_keys(app.store) == before  # no object, index, event: nothing half-written
    fails(grpc.StatusCode.NOT_FOUND, lambda: agents.get_by_reference(slug="ghost"))
    # just under the limit is stored, answered, and listed
    fits = agents.create(_big_agent("fits", limit - 8192))
    assert agents.get(fits.metadata.id) == fits
    assert [a.metadata.slug for a in agents.list_all()] == ["fits"]
    # an update that grows it past the limit is refused, the stored one unchanged
    grown = agent_pb2.Agent()
    grown.CopyFrom(fits)
    grown.spec.mcp_servers.add(name="more").headers["more"] = "y" * 16384
    fails(TOO_BIG, lambda: agents.update(grown))
    assert agents.get(fits.metadata.id) == fits
    assert_serving(channel, app)


def test_a_derived_object_over_the_limit_refuses_the_write_that_derives_it(
    served: tuple[Application, grpc.Channel],
) -> None:
    """Two environments that fit alone resolve into an execution context that does not."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    third = app.registry.limits.max_object_bytes * 6 // 10
    for name in ("first", "second"):
        env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name))
        for i in range(32):
            env.spec.data[f"{name}_{i}"].value = "v" * (third // 32)
        kinds.environments.create(env)
    made = kinds.agent("runner", env_slugs=["first", "second"])
    session = kinds.session(made.status.default_instance_id)
    before = raw_keys(app.store)
    error = fails(TOO_BIG, lambda: kinds.execution(session_id=session.metadata.id))
    assert "max_object_bytes" in error.details()
    assert raw_keys(app.store) == before
    assert list(kinds.executions.list_all()) == [] and list(kinds.contexts.list_all()) == []
    assert_serving(channel, app)


# -- list pages ---------------------------------------------------------------------


def test_pages_never_pass_the_byte_budget_and_lose_nothing(served: tuple[Application, grpc.Channel]) -> None:
    """Objects of nearly the object limit: the old check added one more object whenever any
    budget was left, so a page could pass the 4 MiB message limit; now a page stops before
    the object that would pass its budget."""
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    limits = app.registry.limits
    made = [agents.create(_big_agent(f"big {i}", limits.max_object_bytes - 8192)).metadata.id for i in range(4)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = agents.list_page(page_token=token)
        assert page.ByteSize() <= limits.max_page_bytes
        seen += [a.metadata.id for a in page.entries if a.metadata.slug.startswith("big")]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    per_page = limits.max_page_bytes // (limits.max_object_bytes - 8192 + 16)
    assert sorted(seen) == sorted(made) and pages == -(-4 // per_page)


def test_a_small_page_budget_pages_through_everything(served: tuple[Application, grpc.Channel]) -> None:
    app, channel = served
    app.registry.limits = Limits(max_object_bytes=20_000, max_page_bytes=50_000)
    agents = KindClient(channel, app.registry.kind("Agent"))
    made = {agents.create(_big_agent(f"mid {i}", 15_000)).metadata.id for i in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = agents.list_page(page_token=token, page_size=100)
        # 15 kB objects under a 50 kB budget: never an empty page, never a fourth object past the budget
        assert 1 <= len(page.entries) <= 3 and page.ByteSize() <= 50_000
        seen += [a.metadata.id for a in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made)


def _every_page(list_page: Callable[[str], Any]) -> tuple[int, list[str]]:
    """Page until the token is empty (never until a page is): how many pages, and the ids listed."""
    pages, seen, token = 0, [], ""
    while True:
        page = list_page(token)
        pages += 1
        seen += [entry.metadata.id for entry in page.entries]
        token = page.next_page_token
        if not token:
            return pages, seen


def test_a_list_reads_a_bounded_number_of_objects_it_leaves_out(served: tuple[Application, grpc.Channel]) -> None:
    """A list naming two labels reads one label's index and checks the other on each object: on a
    large org one such call read every object (0.6 s for 8,000 on PostgreSQL, stalling every org's
    reads). Each page now reads at most max_list_skipped objects it leaves out, then ends with a
    token, and paging on still returns every match."""
    app, channel = served
    app.registry.limits = Limits(max_list_skipped=10)
    agents = KindClient(channel, app.registry.kind("Agent"))
    wanted = set()
    for i in range(45):
        labels = {"team": "t", "tier": "gold" if i % 20 == 19 else "bronze"}
        made = agents.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=f"a {i}", labels=labels)))
        if labels["tier"] == "gold":
            wanted.add(made.metadata.id)
    for i in range(45):  # as many golds of another team: neither label's range is the narrower
        agents.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=f"u {i}", labels={"team": "u", "tier": "gold"})))
    pages, seen = _every_page(lambda token: agents.list_page(labels={"team": "t", "tier": "gold"}, page_token=token, page_size=100))
    assert sorted(seen) == sorted(wanted)
    assert pages == 5  # 43 left out, 10 a page
    first = agents.list_page(labels={"team": "u", "tier": "bronze"}, page_size=100)
    assert list(first.entries) == [] and first.next_page_token  # empty, and not the end


def test_index_entries_a_filter_reads_past_count_as_left_out(served: tuple[Application, grpc.Channel]) -> None:
    """A tag could hold the index's separator (NUL): tag "x" + NUL + more is indexed inside tag
    "x"'s range, names no object there, and was passed over uncounted, so one call for tag "x"
    walked every such entry of the org (19,200 for 300 sessions with 64 tags each, 8.9 s for
    2,000 on PostgreSQL) and ended with no token. Writes now refuse such a tag; a store written
    before holds such entries, made here as they were."""
    app, channel = served
    app.registry.limits = Limits(max_list_skipped=10)
    kinds = Kinds.on(app, channel)
    instance = kinds.agent().status.default_instance_id
    session_kind = app.registry.kind("Session")
    for i in range(5):
        noise = session_pb2.Session()
        noise.metadata.id, noise.metadata.org = new_id(session_kind.id_prefix), "local"
        noise.metadata.tags.extend(f"x\x00{i}-{j}" for j in range(10))
        entries = [k for k in session_kind.index_keys(noise) if b"x\x00" in k]  # unchecked, as a write took them
        app.store.transact(lambda txn, entries=entries: [txn.put(k, b"") for k in entries])
    wanted = {kinds.session(instance, f"wanted {i}", tags=["x"]).metadata.id for i in range(2)}
    pages, seen = _every_page(
        lambda token: kinds.sessions.call("list", session_pb2.ListSessionsRequest(tags=["x"], page_token=token, page_size=100))
    )
    assert sorted(seen) == sorted(wanted)
    assert pages >= 5  # 50 entries passed over, 10 a page


def test_a_page_of_redacted_objects_counts_what_is_sent(served: tuple[Application, grpc.Channel]) -> None:
    """Environments are redacted before they are listed: unset secrets come back as the
    marker, longer than what is stored, and the page budget counts what is sent."""
    app, channel = served
    app.registry.limits = Limits(max_object_bytes=20_000, max_page_bytes=30_000)
    kinds = Kinds.on(app, channel)
    made = set()
    for i in range(6):
        env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=f"env {i}"))
        for k in range(200):
            env.spec.data[f"key_{k}"].is_secret = True  # the marker with no stored secret: unset,
            env.spec.data[f"key_{k}"].value = REDACTED  # stored empty and sent as the marker
        env.spec.description = "d" * 2000
        made.add(kinds.environments.create(env).metadata.id)
    seen: list[str] = []
    token = ""
    while True:
        page = kinds.environments.list_page(page_token=token)
        assert page.ByteSize() <= 30_000
        seen += [e.metadata.id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made)


# -- nesting ------------------------------------------------------------------------


def _nested(levels: int, *, leaf: bool = True) -> struct_pb2.Struct:
    top = struct_pb2.Struct()
    inner = top
    for _ in range(levels):
        inner = inner.fields["deeper"].struct_value
    if leaf:
        inner.fields["leaf"].string_value = "x"
    return top


def test_input_nested_past_the_depth_limit_is_refused_naming_the_field(
    served: tuple[Application, grpc.Channel],
) -> None:
    """28 struct levels parse alone and inside a list page, but leave a client no room
    (32 made every list answer INTERNAL DecodeError before); 64 message levels is the limit."""
    app, channel = served
    stubs = wf.Stubs(channel)
    before = raw_keys(app.store)
    deep = wf.workflow("deep")
    deep.spec.tasks[0].task_config.CopyFrom(_nested(28))
    error = fails(BAD, lambda: stubs.workflows.create(deep))
    assert fields_of(error) == ["spec.tasks[0].task_config"]
    assert raw_keys(app.store) == before
    # within the limit: stored, and every list still parses
    ok = wf.workflow("shallow")
    ok.spec.tasks[0].task_config.CopyFrom(_nested(15))
    made = stubs.workflows.create(ok)
    workflows = KindClient(channel, app.registry.kind("Workflow"))
    assert [w.metadata.id for w in workflows.list_all()] == [made.metadata.id]
    # an update that deepens it is refused too
    deeper = type(made)()
    deeper.CopyFrom(made)
    deeper.spec.tasks[1].task_config.CopyFrom(_nested(25))
    error = fails(BAD, lambda: stubs.workflows.update(deeper))
    assert fields_of(error) == ["spec.tasks[1].task_config"]
    assert [w for w in workflows.list_all()] == [made]
    assert_serving(channel, app)


def _a_run(kinds: Kinds) -> Any:
    """An agent execution, in a session of a new agent's default instance."""
    made = kinds.agent("bot")
    return kinds.execution(session_id=kinds.session(made.status.default_instance_id).metadata.id)


def test_execution_message_metadata_nested_too_deep_is_refused(served: tuple[Application, grpc.Channel]) -> None:
    """A runner's report with a deep message ``metadata`` struct: refused, the execution as it was."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    execution = _a_run(kinds)
    status = ae.AgentExecutionStatus(phase=IN_PROGRESS)  # type: ignore[arg-type]
    status.messages.add(type=ae.MESSAGE_AI, content="hi").metadata.CopyFrom(_nested(25))
    report = ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id, status=status)
    error = fails(BAD, lambda: kinds.executions.call("updateStatus", report))
    assert fields_of(error) == ["status.messages[0].metadata"]
    assert kinds.executions.get(execution.metadata.id) == execution
    report.status.messages[0].metadata.CopyFrom(_nested(5))
    assert kinds.executions.call("updateStatus", report).status.messages[0].metadata == _nested(5)
    assert len(list(kinds.executions.list_all())) == 1
    assert_serving(channel, app)


def test_a_report_is_checked_on_its_own_fields_before_the_run_it_changes(
    served: tuple[Application, grpc.Channel],
) -> None:
    """The Values of a report were checked in the merged run: a NaN in the one message sent was
    named ``status.messages[3]`` on a run holding three, and a report that also asked for an
    illegal move was told FAILED_PRECONDITION, not what was wrong with its content."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    execution = _a_run(kinds)
    three = ae.AgentExecutionStatus(phase=IN_PROGRESS)  # type: ignore[arg-type]
    for n in range(3):
        three.messages.add(type=ae.MESSAGE_AI, content=f"m{n}")
    kinds.executions.call("updateStatus", ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id, status=three))
    stored = kinds.executions.get(execution.metadata.id)
    report = ae.AgentExecutionStatus()
    report.messages.add(type=ae.MESSAGE_AI, content="odd").metadata.update({"score": float("nan")})
    sent = ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id, status=report)
    assert fields_of(fails(BAD, lambda: kinds.executions.call("updateStatus", sent))) == ["status.messages[0].metadata"]
    sent.status.phase = PENDING  # type: ignore[assignment]  # no way back from IN_PROGRESS
    assert fields_of(fails(BAD, lambda: kinds.executions.call("updateStatus", sent))) == ["status.messages[0].metadata"]
    assert kinds.executions.get(execution.metadata.id) == stored
    assert_serving(channel, app)


def test_a_write_of_a_run_walks_what_it_was_sent_not_all_the_run_holds(
    served: tuple[Application, grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write of an object walked all of it for its nesting, in Python, with the write lock
    held: each heartbeat of a run holding 65,535 messages took 0.6 s, and every other writer of
    the daemon waited. The stored object's depth is now told by protobuf's parser."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    execution = _a_run(kinds)
    many = ae.AgentExecutionStatus(phase=IN_PROGRESS, runner="r1")  # type: ignore[arg-type]
    for n in range(2000):
        many.messages.add(type=ae.MESSAGE_AI, content="m").metadata.update({"n": n, "tags": ["a", {"b": "c"}]})
    kinds.executions.call("updateStatus", ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id, status=many))
    walked: list[int] = []
    real = NestingCheck._walk

    def counted(self: NestingCheck, *args: Any, **kwargs: Any) -> None:
        walked.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(NestingCheck, "_walk", counted)
    heartbeat = ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id, status=ae.AgentExecutionStatus(runner="r1"))
    answered = kinds.executions.call("updateStatus", heartbeat)
    assert len(answered.status.messages) == 2000
    assert 0 < len(walked) < 10, len(walked)  # the report's few messages, not the run's 2,000 and their Structs


def test_an_object_a_step_nests_deeper_than_its_request_is_refused_naming_the_field(
    served: tuple[Application, grpc.Channel],
) -> None:
    """What a request carried was checked where it came in; what a step builds from it is held to
    the limit when written, and the walk then names where."""
    app, _ = served
    kind = app.registry.kind("Workflow")
    before = raw_keys(app.store)
    deep = wf.workflow("deep")
    deep.spec.tasks[0].task_config.CopyFrom(_nested(25))

    def write(txn: Any) -> None:
        Resources(txn, app.registry).create(kind, deep, org="local", principal="test")

    with pytest.raises(InvalidArgument) as refused:
        app.store.transact(write)
    assert [v.field for v in refused.value.violations] == ["spec.tasks[0].task_config"]
    assert raw_keys(app.store) == before
    shallow = wf.workflow("shallow")
    shallow.spec.tasks[0].task_config.CopyFrom(_nested(15))
    app.store.transact(lambda txn: Resources(txn, app.registry).create(kind, shallow, org="local", principal="test"))
    assert raw_keys(app.store) != before


# -- items per request -------------------------------------------------------------------


def test_a_request_of_more_items_than_the_limit_is_refused_before_it_is_validated(
    served: tuple[Application, grpc.Channel],
) -> None:
    """A valid 2 MB workflow whose task config is a list of a million nulls held the daemon
    for seconds in validation; it is refused at the door, naming the field, and nothing is stored."""
    app, channel = served
    stubs = wf.Stubs(channel)
    before = raw_keys(app.store)
    huge = wf.workflow("huge")
    huge.spec.tasks[0].task_config.fields["rows"].list_value.values.extend(
        struct_pb2.Value() for _ in range(1_000_000)
    )
    error = fails(BAD, lambda: stubs.workflows.create(huge))
    assert fields_of(error) == ['spec.tasks[0].task_config.fields["rows"].list_value.values']
    assert "max_request_items" in (error.details() or "")
    assert raw_keys(app.store) == before
    assert_serving(channel, app)


def test_the_item_limit_is_a_setting_that_applies_to_every_served_call(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    kinds = Kinds.on(app, channel)
    execution = _a_run(kinds)
    app.registry.limits = Limits(max_request_items=20)
    report = ae.AgentExecutionUpdateStatusInput(execution_id=execution.metadata.id)
    report.status.phase = IN_PROGRESS  # type: ignore[assignment]
    for i in range(20):
        report.status.messages.add(type=ae.MESSAGE_AI, content=f"step {i}")
    assert len(kinds.executions.call("updateStatus", report).status.messages) == 20
    report.status.messages.add(type=ae.MESSAGE_AI, content="one too many")
    error = fails(BAD, lambda: kinds.executions.call("updateStatus", report))
    assert fields_of(error) == ["status.messages"]
    assert len(kinds.executions.get(execution.metadata.id).status.messages) == 20
    assert_serving(channel, app)


# -- objects per write (the event sequence) -------------------------------------------


def _owned_environments(app: Application, owner: Any, count: int) -> None:
    """``count`` environments owned by ``owner``, written straight through the store (fast)."""
    kind = app.registry.kind("Environment")

    def write(txn: Any) -> None:
        resources = Resources(txn, app.registry)
        for i in range(count):
            env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=f"child {i}"))
            env.metadata.owner_references.add(kind="Environment", id=owner.metadata.id)
            resources.create(kind, env, org=owner.metadata.org, principal="test")
        resources.publish()

    app.store.transact(write)


def test_a_cascade_larger_than_one_write_is_refused_before_anything_is_deleted(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    app.registry.limits = Limits(max_objects_per_write=60)
    kinds = Kinds.on(app, channel)
    root = kinds.environment("root", {})
    for i in range(30):  # each agent with its default instance: 61 objects with the root
        made = agent(f"owned {i}")
        made.metadata.owner_references.add(kind="Environment", id=root.metadata.id)
        kinds.agents.create(made)
    before = raw_keys(app.store, b"o/")
    error = fails(PRECONDITION, lambda: kinds.environments.delete(root.metadata.id))
    assert "max_objects_per_write" in error.details()
    assert from_rpc_error(error).metadata["setting"] == "STIGMER_MAX_OBJECTS_PER_WRITE"
    # the root owns 60, as many as the limit: the limit counts the root too, and the words say so
    assert "would delete more than 60 objects, itself and what it owns" in error.details(), error.details()
    assert raw_keys(app.store, b"o/") == before
    app.registry.limits = Limits(max_objects_per_write=61)
    kinds.environments.delete(root.metadata.id)
    assert raw_keys(app.store, b"o/agents/") == [] and raw_keys(app.store, b"o/agentinstances/") == []
    assert_serving(channel, app)


def test_a_cascade_counts_an_object_with_two_owners_in_the_tree_once(
    served: tuple[Application, grpc.Channel],
) -> None:
    """The walk reads no more owned entries than the limit leaves room for; entries naming an
    object found already (owned twice in the tree) do not count it twice."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    root = kinds.environment("root", {})
    middle = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name="middle"))
    middle.metadata.owner_references.add(kind="Environment", id=root.metadata.id)
    middle = kinds.environments.create(middle)
    for name in ("b", "c"):  # owned by the root and by the middle one
        both = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name))
        both.metadata.owner_references.add(kind="Environment", id=root.metadata.id)
        both.metadata.owner_references.add(kind="Environment", id=middle.metadata.id)
        kinds.environments.create(both)
    app.registry.limits = Limits(max_objects_per_write=3)
    error = fails(PRECONDITION, lambda: kinds.environments.delete(root.metadata.id))
    assert "would delete more than 3 objects" in error.details(), error.details()
    app.registry.limits = Limits(max_objects_per_write=4)  # four objects, each counted once
    kinds.environments.delete(root.metadata.id)
    assert raw_keys(app.store, b"o/environments/") == []
    assert_serving(channel, app)


def test_a_realistic_cascade_past_the_default_limit_is_refused(served: tuple[Application, grpc.Channel]) -> None:
    """The default limit, at its real size: one environment owning 10,001 others."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    root = kinds.environment("root", {})
    _owned_environments(app, root, app.registry.limits.max_objects_per_write)
    before = len(raw_keys(app.store, b"o/environments/"))
    error = fails(PRECONDITION, lambda: kinds.environments.delete(root.metadata.id))
    assert "max_objects_per_write" in error.details()
    assert len(raw_keys(app.store, b"o/environments/")) == before
    assert_serving(channel, app)


def test_the_event_sequence_cannot_overflow() -> None:
    assert keys.event_key(7, keys.MAX_EVENT_SEQ)[-2:] == b"\xff\xff"
    with pytest.raises(ResourceExhausted):
        keys.event_key(7, keys.MAX_EVENT_SEQ + 1)


# -- answers ---------------------------------------------------------------------------


def test_a_write_whose_answer_would_not_fit_is_not_committed(tmp_path: Path, stigmer_store: str | None) -> None:
    """Three copies of a 1.5 MB gizmo each fit the object limit; the answer holding all of
    them does not fit the message limit, so nothing is written (before: committed, then
    RESOURCE_EXHAUSTED, a ghost write)."""
    pm = plugin_manager(plugins=[GizmoPlugin()])
    with Application(build_registry(pm), open_store(stigmer_store or tmp_path / "data", durable=False), pm) as app:
        server, channel = network(app)
        try:
            gizmos = KindClient(channel, app.registry.kind("Gizmo"))
            source = gizmo_message("Gizmo")()
            source.metadata.name = "source"
            source.spec.note = "n" * 1_500_000
            made = gizmos.create(source)
            before = raw_keys(app.store)
            clone = gizmo_message("CloneGizmoRequest")(value=made.metadata.id, copies=3)
            error = fails(TOO_BIG, lambda: gizmos.call("clone", clone))
            assert "message limit" in error.details()
            assert raw_keys(app.store) == before
            assert (
                len(gizmos.call("clone", gizmo_message("CloneGizmoRequest")(value=made.metadata.id, copies=2)).entries)
                == 2
            )
            assert_serving(channel, app)
        finally:
            channel.close()
            server.stop(grace=1)


def test_a_write_of_more_objects_than_the_limit_is_refused(tmp_path: Path, stigmer_store: str | None) -> None:
    pm = plugin_manager(plugins=[GizmoPlugin()])
    with Application(build_registry(pm), open_store(stigmer_store or tmp_path / "data", durable=False), pm) as app:
        app.registry.limits = Limits(max_objects_per_write=5)
        server, channel = network(app)
        try:
            gizmos = KindClient(channel, app.registry.kind("Gizmo"))
            source = gizmo_message("Gizmo")()
            source.metadata.name = "source"
            made = gizmos.create(source)
            before = raw_keys(app.store)
            clone = gizmo_message("CloneGizmoRequest")(value=made.metadata.id, copies=6)
            error = fails(TOO_BIG, lambda: gizmos.call("clone", clone))
            assert "max_objects_per_write" in error.details()
            assert raw_keys(app.store) == before
            clone.copies = 5
            assert len(gizmos.call("clone", clone).entries) == 5
            assert_serving(channel, app)
        finally:
            channel.close()
            server.stop(grace=1)


def test_limits_are_settings_checked_at_startup(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Limits.from_env({"STIGMER_MAX_OBJECT_BYTES": "4096"}).max_object_bytes == 4096
    for bad in (
        {"STIGMER_MAX_OBJECT_BYTES": "lots"},
        {"STIGMER_MAX_OBJECT_BYTES": "0"},
        {"STIGMER_MAX_OBJECT_BYTES": str(3 << 20)},  # could never be listed in a 3 MiB page
        {"STIGMER_MAX_PAGE_BYTES": str(4 << 20)},  # no room under the message limit
        {"STIGMER_MAX_NESTING_DEPTH": "120"},  # past what protobuf parses
        {"STIGMER_MAX_OBJECTS_PER_WRITE": "70000"},  # past the event sequence
        {"STIGMER_MAX_REQUEST_ITEMS": "0"},
        {"STIGMER_MAX_LIST_SKIPPED": "0"},
    ):
        with pytest.raises(StartupError) as refused:
            Limits.from_env(bad)
        (variable,) = bad
        assert variable in refused.value.message, refused.value.message  # the setting a user gave
    monkeypatch.setenv("STIGMER_MAX_OBJECT_BYTES", "5000")
    with Application.open(tmp_path / "data", durable=False, store=stigmer_store) as app:
        assert app.registry.limits.max_object_bytes == 5000
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        fails(TOO_BIG, lambda: agents.create(_big_agent("over five thousand", 6000)))


def test_a_stored_object_too_deep_for_a_list_is_named_not_internal(served: tuple[Application, grpc.Channel]) -> None:
    """An object stored before the nesting limit (written here straight into the store), too
    deep for protobuf to parse in a page: list names it with FAILED_PRECONDITION, not INTERNAL."""
    app, channel = served
    stubs = wf.Stubs(channel)
    kept = stubs.workflows.create(wf.workflow("kept"))
    made = stubs.workflows.create(wf.workflow("old"))
    old = type(made)()
    old.CopyFrom(made)
    old.spec.tasks[0].task_config.CopyFrom(_nested(32))  # past what protobuf parses, even alone
    kind = app.registry.kind("Workflow")
    stored = old.SerializeToString()
    app.store.transact(lambda txn: txn.put(keys.object_key(kind.key_prefix, old.metadata.id), stored))
    workflows = KindClient(channel, kind)
    error = fails(PRECONDITION, lambda: list(workflows.list_all()))
    assert old.metadata.id in error.details()
    error = fails(PRECONDITION, lambda: list(workflows.list_all(org="local")))
    assert old.metadata.id in error.details()
    assert old.metadata.id in fails(PRECONDITION, lambda: workflows.get(old.metadata.id)).details()
    assert workflows.get(kept.metadata.id) == kept
    assert_serving(channel, app)


def test_numbers_and_times_json_cannot_write_are_refused_naming_the_field(
    served: tuple[Application, grpc.Channel],
) -> None:
    """protobuf stores a NaN and a Timestamp in year 35,000,000; JSON (a client's, a YAML export
    of the whole store) cannot write either, so one such object broke every backup."""
    app, channel = served
    stubs = wf.Stubs(channel)
    before = raw_keys(app.store)
    for bad in (float("nan"), float("inf"), float("-inf")):
        flow = wf.workflow("odd")
        flow.spec.tasks[0].task_config.update({"x": {"y": [1, bad]}})
        assert fields_of(fails(BAD, lambda flow=flow: stubs.workflows.create(flow))) == ["spec.tasks[0].task_config"]
    # a Value with none of its kinds set: protobuf's JSON mapping has none (Go's protojson refuses
    # to print it), and a client writing {string_value: ...} where JSON names are camelCase sends one
    kindless = wf.workflow("odd")
    kindless.spec.tasks[0].task_config.fields["x"].SetInParent()
    in_list = wf.workflow("odd")
    in_list.spec.tasks[0].task_config.update({"x": [1]})
    in_list.spec.tasks[0].task_config.fields["x"].list_value.values.add()
    for flow in (kindless, in_list):
        refused = fails(BAD, lambda flow=flow: stubs.workflows.create(flow))
        assert fields_of(refused) == ["spec.tasks[0].task_config"] and "none of its kinds" in refused.details()
    tokens = KindClient(channel, app.registry.kind("ApiToken"))
    for seconds, nanos in ((1 << 40, 0), (-62_135_596_801, 0), (0, -1), (0, 1_000_000_000)):
        token: Any = app.registry.kind("ApiToken").resource_cls()
        token.metadata.name = "late"
        token.spec.role = "viewer"
        token.spec.expires_at.seconds, token.spec.expires_at.nanos = seconds, nanos
        assert fields_of(fails(BAD, lambda token=token: tokens.create(token))) == ["spec.expires_at"], (seconds, nanos)
    assert raw_keys(app.store) == before
    fine = wf.workflow("fine")
    fine.spec.tasks[0].task_config.update({"x": 1.5e308})
    stubs.workflows.create(fine)
    assert_serving(channel, app)


def test_durations_json_cannot_write_are_refused_naming_the_field_at_every_level(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """protobuf stores a Duration of 10^12 seconds, or one whose seconds and nanos differ in sign;
    JSON cannot write either, so ``stigmer get -o yaml`` failed and an export left the object out."""
    pm = plugin_manager(entry_points=False, plugins=[TimerPlugin()])
    with Application.open(tmp_path, pm=pm, durable=False, store=stigmer_store) as app:
        channel = app.channel()
        timers = KindClient(channel, app.registry.kind("Timer"))
        before = raw_keys(app.store)
        for seconds, nanos in (
            (315_576_000_001, 0), (-315_576_000_001, 0), (1, -1), (-1, 1), (0, 1_000_000_000), (0, -1_000_000_000),
        ):  # fmt: skip
            for where, place in (
                ("spec.timeout", lambda t: t.spec.timeout),
                ("spec.backoff[1]", lambda t: (t.spec.backoff.add(seconds=1), t.spec.backoff.add())[1]),
                ('spec.limits["run"]', lambda t: t.spec.limits["run"]),
                ("spec.stages[0].wait", lambda t: t.spec.stages.add(name="s").wait),
            ):
                timer: Any = timer_message("Timer")()
                timer.metadata.name = "late"
                duration = place(timer)
                duration.seconds, duration.nanos = seconds, nanos
                error = fails(BAD, lambda timer=timer: timers.create(timer))
                assert fields_of(error) == [where], (where, seconds, nanos)
                assert "as JSON can write it" in error.details()
        assert raw_keys(app.store) == before
        fine: Any = timer_message("Timer")()
        fine.metadata.name = "fine"
        for seconds, nanos in ((315_576_000_000, 999_999_999), (-315_576_000_000, -999_999_999), (0, -5), (3, 0)):
            fine.spec.backoff.add(seconds=seconds, nanos=nanos)
        made = timers.create(fine)
        assert json_format.MessageToJson(made)  # what `stigmer get -o yaml` and an export write


def test_a_run_whose_environments_hold_more_keys_than_its_context_is_refused(
    served: tuple[Application, grpc.Channel],
) -> None:
    """Three environments of 200 keys made a context of 600 values, stored against its own rule
    (``data``: 512 at most), which any reader checking it then refused."""
    app, channel = served
    kinds = Kinds.on(app, channel)
    for n in range(3):
        kinds.environment(f"env {n}", {f"E{n}_{i}": ("v", False) for i in range(200)})
    too_many = kinds.agent("wide", env_slugs=["env-0", "env-1", "env-2"])
    refused = fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: kinds.execution(session_id=kinds.session(too_many.status.default_instance_id).metadata.id),
    )
    assert "hold 600 keys together, more than the 512" in refused.details(), refused.details()
    assert not list(KindClient(channel, app.registry.kind("AgentExecution")).list_all())
    fits = kinds.agent("narrow", env_slugs=["env-0", "env-1"])
    made = kinds.execution(session_id=kinds.session(fits.status.default_instance_id, "other").metadata.id)
    context: Any = KindClient(channel, app.registry.kind("ExecutionContext")).get(made.status.execution_context_id)
    assert len(context.spec.data) == 400
    too_big = executioncontext_pb2.ExecutionContext()
    for i in range(513):
        too_big.spec.data[f"K{i}"].value = "v"
    with pytest.raises(InvalidArgument):  # the rule the limit keeps
        validation.check(too_big)
    assert_serving(channel, app)
