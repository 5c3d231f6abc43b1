"""Owner references, references from kinds whose plugin is gone, and environments in use,
driven through a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.auth.access import Access, Caller
from stigmer_core.errors import NotFound
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.resources import Resources
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import keys, open_store
from stigmer_core.testing.inspect import raw_keys
from tests.agent_execution_support import Kinds
from tests.hardening_support import agent, assert_serving, fails, fields_of, network
from tests.widget_kind import WidgetPlugin, message

BAD, MISSING, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.fixture
def served(stigmer_app: Application) -> Iterator[tuple[Application, grpc.Channel]]:
    server, channel = network(stigmer_app)
    yield stigmer_app, channel
    channel.close()
    server.stop(grace=1)


def _owned_agent(name: str, kind: str, owner_id: str, org: str = "") -> Any:
    made = agent(name, org=org)
    made.metadata.owner_references.add(kind=kind, id=owner_id)
    return made


def test_owner_references_are_checked(served: tuple[Application, grpc.Channel]) -> None:
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    owner = agents.create(agent("owner"))
    before = raw_keys(app.store)
    cases = [
        (_owned_agent("slash", "Agent", owner.metadata.id + "/agents"), BAD, "metadata.owner_references[0].id"),
        (_owned_agent("newline", "Agent", owner.metadata.id + "\n"), BAD, "metadata.owner_references[0].id"),
        (_owned_agent("wrong prefix", "Environment", owner.metadata.id), BAD, "metadata.owner_references[0].id"),
        (_owned_agent("no kind", "Gizmo", owner.metadata.id), BAD, "metadata.owner_references[0].kind"),
    ]
    for request, code, field in cases:
        assert fields_of(fails(code, lambda r=request: agents.create(r))) == [field]
    missing = "agt-" + "0" * 26
    fails(MISSING, lambda: agents.create(_owned_agent("ghost owner", "Agent", missing)))
    assert raw_keys(app.store) == before
    # a good one is kept, and deleting the owner takes it along (its default instance too)
    child = agents.create(_owned_agent("child", "Agent", owner.metadata.id))
    agents.delete(owner.metadata.id)
    fails(MISSING, lambda: agents.get(child.metadata.id))
    assert raw_keys(app.store, b"o/") == [] and raw_keys(app.store, b"r/") == []
    assert_serving(channel, app)


def test_an_owner_in_another_org_is_not_found_and_cascades_stay_in_their_org(
    served: tuple[Application, grpc.Channel],
) -> None:
    app, channel = served
    agents = KindClient(channel, app.registry.kind("Agent"))
    ours = agents.create(agent("ours", org="one"))
    error = fails(MISSING, lambda: agents.create(_owned_agent("theirs", "Agent", ours.metadata.id, org="two")))
    assert "org 'two'" in error.details()
    # an ownership entry across orgs written before owner references were checked
    theirs = agents.create(agent("theirs", org="two"))
    app.store.transact(lambda txn: txn.put(keys.owned_key(ours.metadata.id, "agents", theirs.metadata.id), b""))
    agents.delete(ours.metadata.id)
    assert agents.get(theirs.metadata.id) == theirs
    assert_serving(channel, app)


# -- kinds whose plugin was uninstalled ---------------------------------------------


@pytest.fixture
def widgets_then_uninstalled(
    tmp_path: Path, stigmer_store: str | None
) -> Iterator[tuple[Application, grpc.Channel, dict[str, str]]]:
    """Agents referenced and owned by widgets; then the store served without the widget plugin."""
    data = tmp_path / "data"
    pm = plugin_manager(plugins=[WidgetPlugin()])
    with Application(build_registry(pm), open_store(stigmer_store or data, durable=False), pm) as before:
        channel = before.channel()
        agents = KindClient(channel, before.registry.kind("Agent"))
        widgets = KindClient(channel, before.registry.kind("Widget"))
        referenced = agents.create(agent("referenced"))
        owning = agents.create(agent("owning"))
        widget = message("Widget")()
        widget.metadata.name = "pointer"
        widget.spec.owner_id = referenced.metadata.id
        widgets.create(widget)
        owned = message("Widget")()
        owned.metadata.name = "owned"
        owned.metadata.owner_references.add(kind="Agent", id=owning.metadata.id)
        widgets.create(owned)
        ids = {"referenced": referenced.metadata.id, "owning": owning.metadata.id}
    app = Application.open(data, durable=False, store=stigmer_store)
    assert app.registry.find("Widget") is None
    server, channel = network(app)
    yield app, channel, ids
    channel.close()
    server.stop(grace=1)
    app.close()


def test_objects_of_an_uninstalled_kind_block_deletes_instead_of_crashing(
    widgets_then_uninstalled: tuple[Application, grpc.Channel, dict[str, str]],
) -> None:
    app, channel, ids = widgets_then_uninstalled
    agents = KindClient(channel, app.registry.kind("Agent"))
    before = raw_keys(app.store)
    error = fails(PRECONDITION, lambda: agents.delete(ids["referenced"]))
    assert "'widgets'" in error.details() and "no installed plugin" in error.details()
    error = fails(PRECONDITION, lambda: agents.delete(ids["owning"]))
    assert "'widgets'" in error.details()
    assert raw_keys(app.store) == before
    assert agents.get(ids["referenced"]).metadata.id == ids["referenced"]  # type: ignore[attr-defined]
    assert_serving(channel, app)


# -- environments in use ------------------------------------------------------------


def test_an_environment_named_by_an_agent_cannot_be_deleted(served: tuple[Application, grpc.Channel]) -> None:
    app, channel = served
    kinds = Kinds.on(app, channel)
    by_slug = kinds.environment("shared", {"k": ("v", False)})
    by_id = kinds.environment("pinned", {"k": ("v", False)})
    user = agent("user")
    user.spec.environment_refs.add(slug="shared")
    user.spec.environment_refs.add(id=by_id.metadata.id)
    made = kinds.agents.create(user)
    for env in (by_slug, by_id):
        error = fails(PRECONDITION, lambda e=env: kinds.environments.delete(e.metadata.id))
        assert "spec.environment_refs" in error.details()
        assert kinds.environments.get(env.metadata.id).metadata.id == env.metadata.id  # type: ignore[attr-defined]
    # the agent's default instance names them too; deleting the agent deletes it
    kinds.agents.delete(made.metadata.id)
    kinds.environments.delete(by_slug.metadata.id)
    kinds.environments.delete(by_id.metadata.id)
    # an environment of the same slug in another org is not held by this org's references
    other = kinds.environment("shared", {}, org="elsewhere")
    kinds.agents.create(user)
    kinds.environments.delete(other.metadata.id)
    assert_serving(channel, app)


def test_a_reference_to_an_object_written_earlier_in_the_same_write_is_held_to_its_org(
    stigmer_app: Application,
) -> None:
    """A target the transaction itself wrote is known without reading it back: still only in
    its own org, and only when the caller may see that org."""
    registry = stigmer_app.registry
    agents, instances = registry.kind("Agent"), registry.kind("AgentInstance")

    def write(name: str, agent_org: str, instance_org: str, caller: Caller | None = None) -> str:
        def body(txn: Any) -> str:
            resources = Resources(txn, registry, caller=caller, access=Access.WRITE)
            made = resources.create(agents, agent(name), org=agent_org, principal="test")
            instance = agentinstance_pb2.AgentInstance()
            instance.metadata.name = name
            instance.spec.agent_id = made.metadata.id  # type: ignore[attr-defined]
            resources.create(instances, instance, org=instance_org, principal="test")
            return str(instance.metadata.id)

        return stigmer_app.store.transact(body)

    with pytest.raises(NotFound, match=r"not found in org 'beta' \(spec.agent_id\)"):
        write("crossing", "alpha", "beta")
    assert write("staying", "alpha", "alpha")
    assert write("as a member", "alpha", "alpha", Caller("member", roles={"alpha": "admin"}))


def test_an_id_field_given_a_slug_is_refused_naming_the_field_not_answered_not_found(
    served: tuple[Application, grpc.Channel],
) -> None:
    """``listBy…`` refused a slug in its id field; an execution's ``spec.agent_id``, a skill's
    ``listVersions`` and a run's ``cancel``, ``updateStatus`` and ``subscribe`` said NOT_FOUND of
    an object that exists under that slug."""
    from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
    from stigmer_core.api.agentic.skill.v1 import skill_pb2

    app, channel = served
    kinds = Kinds.on(app, channel)
    bot = kinds.agent("bot")
    error = fails(BAD, lambda: kinds.execution(agent_id="bot"))
    assert fields_of(error) == ["spec.agent_id"] and "getByReference" in error.details(), error.details()
    assert fields_of(fails(BAD, lambda: kinds.execution(session_id="chat"))) == ["spec.session_id"]
    run = kinds.execution(agent_id=bot.metadata.id)
    assert fields_of(fails(BAD, lambda: kinds.cancel(run.metadata.slug))) == ["id"]
    update = ae.AgentExecutionUpdateStatusInput(execution_id=run.metadata.slug, status=ae.AgentExecutionStatus())
    assert fields_of(fails(BAD, lambda: kinds.executions.call("updateStatus", update))) == ["execution_id"]
    watch = ae.SubscribeAgentExecutionInput(execution_id=run.metadata.slug)
    assert fields_of(fails(BAD, lambda: next(iter(kinds.executions.call("subscribe", watch))))) == ["execution_id"]
    skills = KindClient(channel, app.registry.kind("Skill"))
    skill = skills.create(skill_pb2.Skill(metadata={"name": "calc"}, spec=skill_pb2.SkillSpec(skill_md="# calc")))
    versions = skill_pb2.ListSkillVersionsRequest(skill_id=skill.metadata.slug)
    assert fields_of(fails(BAD, lambda: skills.call("listVersions", versions))) == ["skill_id"]
    missing = f"{run.metadata.id[:-1]}{'0' if run.metadata.id[-1] != '0' else '1'}"  # an id's shape, stored nowhere
    fails(MISSING, lambda: kinds.cancel(missing))
    assert_serving(channel, app)
