"""An agent's default instance follows the agent's ``spec.environment_refs``: what an update or
an apply removes from the agent stops reaching its runs and stops holding the environment.
Both engines, both channels (in process and a real server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from tests.agent_execution_support import Kinds
from tests.hardening_support import agent, fails
from tests.workflow_helpers import Stubs, workflow

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _refs(obj: Any) -> list[str]:
    return [ref.slug or ref.id for ref in obj.spec.environment_refs]


def _with_refs(made: Any, slugs: Sequence[str]) -> Any:
    changed = type(made)()
    changed.CopyFrom(made)
    del changed.spec.environment_refs[:]
    for slug in slugs:
        changed.spec.environment_refs.add(slug=slug)
    return changed


def _run_keys(kinds: Kinds, agent_id: str) -> set[str]:
    """The keys the context of a new run of the agent holds (each environment has its own key)."""
    execution = kinds.execution(agent_id=agent_id)
    return set(kinds.contexts.get(execution.status.execution_context_id).spec.data)


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    kinds = Kinds.on(stigmer_app, stigmer_channel)
    for slug in ("alpha", "beta", "gamma", "delta"):
        kinds.environment(slug, {slug.upper(): (f"{slug}-secret", True)})
    return kinds


def test_an_update_removes_and_adds_on_the_default_instance_keeping_its_own(kinds: Kinds) -> None:
    made = kinds.agent("bot", env_slugs=["alpha", "beta"])
    instance_id = made.status.default_instance_id
    instance = kinds.instances.get(instance_id)
    assert _refs(instance) == ["alpha", "beta"]
    kinds.instances.update(_with_refs(instance, ["alpha", "beta", "gamma"]))  # set on the instance itself

    kinds.agents.update(_with_refs(made, ["beta", "delta"]))

    assert _refs(kinds.instances.get(instance_id)) == ["beta", "gamma", "delta"]
    assert _run_keys(kinds, made.metadata.id) == {"BETA", "GAMMA", "DELTA"}
    removed = kinds.environments.get_by_reference(slug="alpha")
    kinds.environments.delete(removed.metadata.id)  # nothing names it any more

    # an update that leaves the refs as they were leaves the instance as it is, edits by hand included
    kinds.instances.update(_with_refs(kinds.instances.get(instance_id), ["gamma"]))
    before = kinds.instances.get(instance_id)
    changed = _with_refs(kinds.agents.get(made.metadata.id), ["beta", "delta"])
    changed.spec.instructions = "Be brief."
    kinds.agents.update(changed)
    assert kinds.instances.get(instance_id) == before


def test_an_apply_carries_the_agents_refs_as_given(kinds: Kinds) -> None:
    made = kinds.agent("bot", env_slugs=["alpha", "beta"])
    instance_id = made.status.default_instance_id
    document = agent("bot")  # what `stigmer apply` sends: by slug, no id
    for slug in ("beta", "alpha"):
        document.spec.environment_refs.add(slug=slug)
    kinds.agents.apply(document)
    assert _refs(kinds.instances.get(instance_id)) == ["beta", "alpha"]  # untouched by hand: order follows too

    del document.spec.environment_refs[:]
    document.spec.environment_refs.add(slug="beta")
    kinds.agents.apply(document)

    assert _refs(kinds.instances.get(instance_id)) == ["beta"]
    assert _run_keys(kinds, made.metadata.id) == {"BETA"}
    alpha = kinds.environments.get_by_reference(slug="alpha")
    kinds.environments.delete(alpha.metadata.id)


def test_a_default_instance_holding_an_environment_names_the_edit_not_a_delete(kinds: Kinds) -> None:
    made = kinds.agent("bot", env_slugs=["alpha"])
    instance_id = made.status.default_instance_id
    kinds.instances.update(_with_refs(kinds.instances.get(instance_id), ["alpha", "gamma"]))
    alpha = kinds.environments.get_by_reference(slug="alpha")
    gamma = kinds.environments.get_by_reference(slug="gamma")

    # the agent names alpha: it is the one named, and editing it frees alpha
    error = from_rpc_error(fails(PRECONDITION, lambda: kinds.environments.delete(alpha.metadata.id)))
    assert error.message == (
        "environment 'alpha' is still referenced by agent 'bot' (spec.environment_refs); remove it from there first"
    )
    assert (error.reason, error.metadata["referrerKind"]) == ("REFERENCED", "Agent")
    # only the default instance names gamma: the refusal says to edit it, and that works
    error = from_rpc_error(fails(PRECONDITION, lambda: kinds.environments.delete(gamma.metadata.id)))
    assert error.message == (
        "environment 'gamma' is still referenced by agent instance 'bot-default' (spec.environment_refs), "
        "the default instance of agent 'bot'; remove it from the instance's spec.environment_refs "
        "(it goes only with its agent)"
    )
    assert error.metadata["defaultInstanceOf"] == "Agent"
    kinds.instances.update(_with_refs(kinds.instances.get(instance_id), ["alpha"]))
    kinds.environments.delete(gamma.metadata.id)
    kinds.agents.update(_with_refs(kinds.agents.get(made.metadata.id), []))
    kinds.environments.delete(alpha.metadata.id)


def test_an_update_that_would_overfill_the_default_instance_is_refused_by_field(kinds: Kinds) -> None:
    made = kinds.agent("bot")
    instance_id = made.status.default_instance_id
    kinds.instances.update(_with_refs(kinds.instances.get(instance_id), [f"own-{i}" for i in range(62)]))
    error = fails(
        grpc.StatusCode.INVALID_ARGUMENT, lambda: kinds.agents.update(_with_refs(made, ["alpha", "beta", "gamma"]))
    )
    assert [v.field for v in from_rpc_error(error).violations] == ["spec.environment_refs"]  # type: ignore[attr-defined]
    assert "more than 64" in error.details()
    assert _refs(kinds.agents.get(made.metadata.id)) == []  # nothing written


def test_a_workflows_default_instance_holding_an_environment_names_the_edit(
    kinds: Kinds, stigmer_channel: grpc.Channel
) -> None:
    """A Workflow has no environment_refs of its own: its default instance's are set on it, and
    the refusal says so rather than offering a delete the instance refuses."""
    stubs = Stubs(stigmer_channel)
    made = stubs.workflows.create(workflow())
    stored = stubs.get_instance(made.status.default_instance_id)
    stubs.instances.update(_with_refs(stored, ["gamma"]))
    gamma = kinds.environments.get_by_reference(slug="gamma")
    error = from_rpc_error(fails(PRECONDITION, lambda: kinds.environments.delete(gamma.metadata.id)))
    assert error.message == (
        "environment 'gamma' is still referenced by workflow instance 'triage-default' (spec.environment_refs), "
        "the default instance of workflow 'triage'; remove it from the instance's spec.environment_refs "
        "(it goes only with its workflow)"
    )
    assert error.metadata["defaultInstanceOf"] == "Workflow"
    stubs.instances.update(_with_refs(stubs.get_instance(made.status.default_instance_id), []))
    kinds.environments.delete(gamma.metadata.id)
