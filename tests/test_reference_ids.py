"""References by id are checked when written: an id of the referenced kind, and one object named.

Executions resolve a reference only when they are created, and an environment's
delete guard goes by the id, so a malformed id or a slug contradicting the id
would otherwise be stored and show only as an execution that cannot start, or
as an environment deleted although something names it.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.hardening_support import fails, fields_of
from tests.workflow_helpers import instance, workflow

BAD = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def clients(stigmer_app: Application, stigmer_server: Server) -> Any:
    channel = grpc.insecure_channel(stigmer_server.address)
    yield lambda kind: KindClient(channel, stigmer_app.registry.kind(kind))
    channel.close()


def _environment(clients: Any, name: str = "prod") -> Any:
    return clients("Environment").create(
        environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name))
    )


def _agent(name: str, field: str = "environment_refs", **ref: str) -> agent_pb2.Agent:
    made = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name))
    made.spec.instructions = "Be brief."
    getattr(made.spec, field).append(metadata_pb2.ApiResourceReference(**ref))
    return made


def test_an_id_not_of_the_referenced_kind_is_refused_on_the_id(clients: Any) -> None:
    env = _environment(clients)
    agents = clients("Agent")
    other = agents.create(_agent("other", slug="prod"))
    env_id, agent_id = env.metadata.id, other.metadata.id
    skill_id = "skl-" + env_id.split("-", 1)[1]
    for field, good, bad in (
        ("environment_refs", env_id, [agent_id, " " + env_id, env_id + "\n", env_id.upper(), skill_id, "prod"]),
        ("skill_refs", skill_id, [env_id, skill_id + " ", skill_id.upper()]),
    ):
        for i, wrong in enumerate(bad):
            error = fails(BAD, lambda w=wrong, f=field, n=i: agents.create(_agent(f"bad {f} {n}", f, id=w)))  # type: ignore[misc]
            assert fields_of(error) == [f"spec.{field}[0].id"], wrong
        agents.create(_agent(f"good {field}", field, id=good))  # well formed: kept, even if nothing has it yet


def test_every_kind_holding_environment_refs_checks_them(clients: Any) -> None:
    env = _environment(clients)
    wrong = metadata_pb2.ApiResourceReference(id=env.metadata.id.upper())
    agent = clients("Agent").create(_agent("bot", slug="prod"))
    ain = agentinstance_pb2.AgentInstance(metadata=metadata_pb2.ApiResourceMetadata(name="bot pinned"))
    ain.spec.agent_id = agent.metadata.id
    ain.spec.environment_refs.append(wrong)
    assert fields_of(fails(BAD, lambda: clients("AgentInstance").create(ain))) == ["spec.environment_refs[0].id"]
    made = clients("Workflow").create(workflow())
    wfi = instance("triage pinned", made.metadata.id)
    wfi.spec.environment_refs.append(wrong)
    assert fields_of(fails(BAD, lambda: clients("WorkflowInstance").create(wfi))) == ["spec.environment_refs[0].id"]
    default = clients("AgentInstance").get_by_reference(slug="bot-default")
    default.spec.environment_refs.append(metadata_pb2.ApiResourceReference())  # names nothing
    assert fields_of(fails(BAD, lambda: clients("AgentInstance").update(default))) == ["spec.environment_refs[1]"]


def test_a_slug_and_an_id_must_name_one_object(clients: Any) -> None:
    prod, staging = _environment(clients, "prod"), _environment(clients, "staging")
    agents = clients("Agent")
    for i, ref in enumerate(
        (
            {"slug": "prod", "id": staging.metadata.id},
            {"slug": "nowhere", "id": prod.metadata.id},
            {"slug": "prod", "id": "env-" + "0" * 26},
        )
    ):
        error = fails(BAD, lambda r=ref, n=i: agents.create(_agent(f"mixed {n}", **r)))  # type: ignore[misc]
        assert fields_of(error) == ["spec.environment_refs[0]"]
    both = agents.create(_agent("both", slug="prod", id=prod.metadata.id))
    error = fails(grpc.StatusCode.FAILED_PRECONDITION, lambda: clients("Environment").delete(prod.metadata.id))
    assert "still referenced" in error.details()
    clients("Environment").delete(staging.metadata.id)  # named by no one
    agents.delete(both.metadata.id)


def test_a_get_by_reference_giving_a_slug_and_an_id_of_two_objects_is_refused(clients: Any) -> None:
    """getByReference answered the id's object and ignored the slug, where a stored reference
    giving both is refused."""
    prod, staging = _environment(clients, "prod"), _environment(clients, "staging")
    envs = clients("Environment")
    error = fails(BAD, lambda: envs.get_by_reference(slug="staging", id=prod.metadata.id))
    assert fields_of(error) == ["slug"] and "do not name the same environment" in error.details()
    assert envs.get_by_reference(slug="prod", id=prod.metadata.id).metadata.id == prod.metadata.id
    assert envs.get_by_reference(slug="staging").metadata.id == staging.metadata.id


def test_a_version_of_a_kind_that_keeps_none_is_refused(clients: Any) -> None:
    """A reference's version was ignored for a kind without versions: the current state answered
    as if it were the version asked for."""
    _environment(clients, "prod")
    envs = clients("Environment")
    ref = metadata_pb2.ApiResourceReference(slug="prod", version="v9")
    error = fails(BAD, lambda: envs.call("getByReference", ref))
    assert fields_of(error) == ["version"] and "keep no versions" in error.details()
    # a stored reference keeps what it was given, as the previous release stored it: a store
    # holding one restores, and its version is not used
    pinned = clients("Agent").create(_agent("pinned", slug="prod", version="v7"))
    assert pinned.spec.environment_refs[0].version == "v7"
