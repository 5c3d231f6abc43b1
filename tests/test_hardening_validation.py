"""Validation the server owes its clients, through a real server on 127.0.0.1:
message-level rules, ids with a trailing newline, and a runner's task reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.skill.v1 import skill_pb2 as sk
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2 as wx
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from stigmer_core.testing.inspect import raw_keys
from stigmer_plugins.workflow_tasks import MAX_TASKS
from tests import workflow_helpers as wf
from tests.agent_execution_support import IN_PROGRESS
from tests.gizmo_kind import GizmoPlugin, message
from tests.hardening_support import agent, assert_serving, fails, fields_of, network

BAD, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def gizmos(tmp_path: Path, stigmer_store: str | None) -> Iterator[tuple[Application, grpc.Channel]]:
    pm = plugin_manager(plugins=[GizmoPlugin()])
    app = Application(build_registry(pm), open_store(stigmer_store or tmp_path / "data", durable=False), pm)
    server, channel = network(app)
    yield app, channel
    channel.close()
    server.stop(grace=1)
    app.close()


@pytest.fixture
def served(stigmer_app: Application) -> Iterator[tuple[Application, grpc.Channel]]:
    server, channel = network(stigmer_app)
    yield stigmer_app, channel
    channel.close()
    server.stop(grace=1)


def test_message_level_rules_are_reported_on_the_message(gizmos: tuple[Application, grpc.Channel]) -> None:
    """An empty getByReference or update broke a message-level rule and answered INTERNAL."""
    app, channel = gizmos
    client = KindClient(channel, app.registry.kind("Gizmo"))
    error = fails(BAD, lambda: client.call("getByReference", message("GizmoReference")()))
    assert fields_of(error) == [""] and "a slug or an id is required" in error.details()
    before = raw_keys(app.store)
    error = fails(BAD, lambda: client.update(message("Gizmo")()))
    assert fields_of(error) == [""] and "a gizmo needs metadata" in error.details()
    backwards = message("Gizmo")()
    backwards.metadata.name = "backwards"
    backwards.spec.low, backwards.spec.high = 5, 1
    error = fails(BAD, lambda: client.create(backwards))
    assert fields_of(error) == ["spec"] and "low must not be above high" in error.details()
    assert raw_keys(app.store) == before
    backwards.spec.high = 9
    assert client.create(backwards).spec.high == 9
    assert_serving(channel, app)


def test_an_id_with_a_trailing_newline_is_not_an_id(served: tuple[Application, grpc.Channel]) -> None:
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    before = raw_keys(app.store)
    error = fails(BAD, lambda: agents.create(agent("newline", id="agt-" + "0" * 26 + "\n")))
    assert fields_of(error) == ["metadata.id"]
    assert raw_keys(app.store) == before
    made = agents.create(agent("plain"))
    fails(grpc.StatusCode.NOT_FOUND, lambda: agents.get(made.metadata.id + "\n"))


def test_a_name_of_letters_no_slug_can_hold_says_which_letters_a_slug_takes(
    served: tuple[Application, grpc.Channel],
) -> None:
    """"needs at least one letter or digit" was said of a name made of letters (漢), which a slug,
    being ASCII, cannot hold."""
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    error = fails(BAD, lambda: agents.create(agent("漢字")))
    assert fields_of(error) == ["metadata.name"] and "ASCII letter or digit (a-z, 0-9)" in error.details()
    assert agents.create(agent("漢字", slug="kanji")).metadata.slug == "kanji"


def test_a_slug_shaped_like_an_id_is_refused_as_no_lookup_could_find_it(
    served: tuple[Application, grpc.Channel],
) -> None:
    """An agent whose slug was another agent's id was listed under that id, and the CLI's
    `get agent <it>` found the other agent; a skill push naming another skill's id in its slug
    made a new skill of that slug."""
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    victim = agents.create(agent("victim"))
    before = raw_keys(app.store)
    for made in (
        lambda: agents.create(agent("impostor", slug=victim.metadata.id)),
        lambda: agents.create(agent("unused", slug="env-" + victim.metadata.id[4:])),
        lambda: agents.call("apply", agent("applied", slug=victim.metadata.id)),
    ):
        error = fails(BAD, made)
        assert fields_of(error) == ["metadata.slug"] and "has the shape of an id" in error.details()
        assert from_rpc_error(error).reason == "SLUG_LOOKS_LIKE_ID"
    error = fails(BAD, lambda: agents.create(agent(victim.metadata.id)))
    assert fields_of(error) == ["metadata.name"] and f"derives the slug '{victim.metadata.id}'" in error.details()
    skills = KindClient(channel, app.registry.kind("Skill"))
    error = fails(BAD, lambda: skills.call("push", sk.PushSkillRequest(slug=victim.metadata.id, skill_md="# x")))
    assert fields_of(error) == ["slug"]
    assert raw_keys(app.store) == before
    assert agents.create(agent("near", slug=victim.metadata.id + "-x")).metadata.slug == victim.metadata.id + "-x"
    # a create giving the object's own id restores it as it was (an import of a store written
    # before the refusal): its slug is kept
    legacy_slug = "agt-" + victim.metadata.id[4:-1] + "0"
    restored = agents.create(agent("restored", slug=legacy_slug, id="agt-" + "1" + victim.metadata.id[5:]))
    assert restored.metadata.slug == legacy_slug


def test_an_indexed_tag_holding_nul_is_refused(served: tuple[Application, grpc.Channel]) -> None:
    """NUL separates an index entry's parts: a tag `x\\0ses-<id>` was stored, its entry reading as a
    tag and another object's id (no page answered it, but the index held what no one wrote)."""
    from tests.agent_execution_support import Kinds

    app, channel = served
    kinds = Kinds.on(app, channel)
    made = kinds.agent("tagger")
    before = raw_keys(app.store)
    error = fails(BAD, lambda: kinds.session(made.status.default_instance_id, tags=["x\x00ses-" + "0" * 26]))
    assert fields_of(error) == ["(index tag)"] and "NUL character" in error.details(), error.details()
    assert raw_keys(app.store) == before
    assert kinds.session(made.status.default_instance_id, tags=["nightly"]).metadata.tags == ["nightly"]


def test_a_task_report_past_the_status_limit_is_refused(served: tuple[Application, grpc.Channel]) -> None:
    """Reports merge by name and append tasks the workflow does not list: they could grow
    status.tasks past its own max_items, after which every update of the execution failed."""
    app, channel = served
    stubs = wf.Stubs(channel)
    made = stubs.workflows.create(wf.workflow("many"))
    executions = KindClient(channel, app.registry.kind("WorkflowExecution"))
    run = wx.WorkflowExecution()
    run.metadata.name = "run"
    run.spec.workflow_id = made.metadata.id
    run = executions.create(run)

    def report(names: range) -> wx.WorkflowExecution:
        status = wx.WorkflowExecutionStatus(phase=IN_PROGRESS)  # type: ignore[arg-type]
        for i in names:
            status.tasks.add(task_name=f"nested-{i}", phase=IN_PROGRESS)  # type: ignore[arg-type]
        request = wx.WorkflowExecutionUpdateStatusInput(execution_id=run.metadata.id, status=status)
        return executions.call("updateStatus", request)  # type: ignore[no-any-return]

    existing = len(run.status.tasks)
    full = report(range(MAX_TASKS - existing))
    assert len(full.status.tasks) == MAX_TASKS
    error = fails(PRECONDITION, lambda: report(range(MAX_TASKS, MAX_TASKS + 1)))
    assert "status.tasks" in error.details()
    refused = from_rpc_error(error)  # said as an agent execution's full list is: one reason for both kinds
    assert (refused.reason, refused.metadata) == ("REPORT_LIMIT", {"field": "status.tasks", "limit": str(MAX_TASKS)})
    assert executions.get(run.metadata.id) == full
    # an ordinary update of the execution still passes validation
    labelled = wx.WorkflowExecution()
    labelled.CopyFrom(full)
    labelled.metadata.labels["team"] = "support"
    assert executions.update(labelled).metadata.labels["team"] == "support"
    assert_serving(channel, app)
