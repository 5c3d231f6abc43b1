"""Environment references stay in their object's org.

An environment's delete is refused while something names it, so a reference
from another org would let that org's callers keep an environment they cannot
see from being deleted (and tell its owner their object's id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from tests.auth_support import ALPHA, BETA, make_token, with_token
from tests.hardening_support import fields_of


@pytest.fixture
def app(tmp_path: Any, stigmer_store: str | None) -> Iterator[Application]:
    app = Application.open(tmp_path / "data", durable=False, require_auth=True, store=stigmer_store)
    yield app
    app.close()


def _client(app: Application, kind: str, token: str | None = None) -> KindClient:
    channel = app.channel() if token is None else with_token(app.channel(), token)
    return KindClient(channel, app.registry.kind(kind))


def _environment(org: str) -> environment_pb2.Environment:
    env = environment_pb2.Environment()
    env.metadata.name = "prod"
    env.metadata.org = org
    return env


def _agent(in_org: str, name: str, **ref: str) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    agent.metadata.org = in_org
    agent.spec.instructions = "Be brief."
    agent.spec.environment_refs.append(metadata_pb2.ApiResourceReference(**ref))
    return agent


def _violations(call: Any) -> tuple[grpc.StatusCode, list[str]]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), fields_of(exc) if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else []
    return grpc.StatusCode.OK, []


def test_a_reference_into_another_org_is_refused_by_org_and_slug(app: Application) -> None:
    _client(app, "Environment").create(_environment(ALPHA))
    editor, _ = make_token(app, BETA, "editor")
    agents = _client(app, "Agent", editor)
    assert _violations(lambda: agents.create(_agent(BETA, "pin", org=ALPHA, slug="prod"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["spec.environment_refs[0]"],
    )
    made: Any = agents.create(_agent(BETA, "own", slug="prod"))  # its own org: fine, even before it exists
    moved: Any = agent_pb2.Agent()
    moved.CopyFrom(made)
    moved.spec.environment_refs[0].org = ALPHA
    assert _violations(lambda: agents.update(moved))[0] == grpc.StatusCode.INVALID_ARGUMENT
    envs = _client(app, "Environment")
    found: Any = envs.get_by_reference(org=ALPHA, slug="prod")
    envs.delete(found.metadata.id)  # nothing pinned it


def test_a_reference_by_an_id_the_caller_cannot_see_pins_nothing(app: Application) -> None:
    env: Any = _client(app, "Environment").create(_environment(ALPHA))
    editor, _ = make_token(app, BETA, "editor")
    # Refusing it would tell beta the id exists in another org; it is kept, and holds nothing.
    _client(app, "Agent", editor).create(_agent(BETA, "by id", id=env.metadata.id))
    admin, _ = make_token(app, ALPHA, "admin")
    _client(app, "Environment", admin).delete(env.metadata.id)


def test_the_administrator_cannot_cross_orgs_either(app: Application) -> None:
    env: Any = _client(app, "Environment").create(_environment(ALPHA))
    agents = _client(app, "Agent")
    for ref in ({"id": env.metadata.id}, {"org": ALPHA, "slug": "prod"}):
        assert _violations(lambda ref=ref: agents.create(_agent(BETA, "pin", **ref))) == (  # type: ignore[misc]
            grpc.StatusCode.INVALID_ARGUMENT,
            ["spec.environment_refs[0]"],
        )
    same: Any = agents.create(_agent(ALPHA, "same", id=env.metadata.id))
    code = _violations(lambda: _client(app, "Environment").delete(env.metadata.id))[0]
    assert code == grpc.StatusCode.FAILED_PRECONDITION, "a reference in the same org still holds it"
    agents.delete(same.metadata.id)
