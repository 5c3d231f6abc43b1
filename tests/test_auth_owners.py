"""Owner references as a caller's role sees them, over a real server that requires tokens.

An owner reference names an object of the writer's org by kind and id, so
answering it by whether the id exists would let a caller probe for objects of
a kind it may not read (an editor, for the org's API tokens), and an object it
could attach to one would go when an admin deletes it. A reference to such a
kind is refused from the kind alone, and no refusal names what the caller may
not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.ids import new_id
from stigmer_core.kind_client import KindClient
from tests.auth_support import ALPHA, make_token, requiring_tokens, served, with_token

DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def app(tmp_path: Any, stigmer_store: str | None) -> Iterator[Application]:
    """Once per engine: a team server keeps orgs apart on PostgreSQL as a daemon does on LMDB."""
    with requiring_tokens(tmp_path, stigmer_store) as app:
        yield app


@pytest.fixture
def plain(app: Application) -> Iterator[grpc.Channel]:
    with served(app) as server, grpc.insecure_channel(server.address) as channel:
        yield channel


def _skill(name: str, owner_kind: str = "", owner_id: str = "") -> skill_pb2.Skill:
    skill = skill_pb2.Skill(spec=skill_pb2.SkillSpec(skill_md="# Calc\nAdds numbers.\n", description="adds", tag="v1"))
    skill.metadata.name = name
    skill.metadata.org = ALPHA
    if owner_kind:
        skill.metadata.owner_references.add(kind=owner_kind, id=owner_id)
    return skill


def _refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_an_editor_cannot_probe_or_attach_to_the_orgs_api_tokens(app: Application, plain: grpc.Channel) -> None:
    """The same PERMISSION_DENIED, naming the field, for one of the org's tokens, a made-up id and a
    malformed one; nothing is written. What the editor may read it may still name as an owner."""
    editor, _ = make_token(app, ALPHA, "editor")
    admin, _ = make_token(app, ALPHA, "admin")
    _, held = make_token(app, ALPHA, "viewer", "held")
    skill_kind = app.registry.kind("Skill")
    skills = KindClient(with_token(plain, editor), skill_kind)
    answers = set()
    for i, token_id in enumerate((held.metadata.id, new_id(app.registry.kind("ApiToken").id_prefix), "not-an-id")):
        refused = _refusal(lambda i=i, token_id=token_id: skills.create(_skill(f"probe {i}", "ApiToken", token_id)))
        error = from_rpc_error(refused)
        assert refused.code() == DENIED
        assert error.metadata["field"] == "metadata.owner_references[0].kind"
        assert error.metadata["kind"] == "ApiToken" and error.metadata["access"] == "admin"
        answers.add(refused.details())
    assert len(answers) == 1 and held.metadata.slug not in answers.pop()
    assert not KindClient(app.channel(), skill_kind).list_page(org=ALPHA).entries

    agents = KindClient(with_token(plain, editor), app.registry.kind("Agent"))
    agent: Any = agents.create(agent_pb2.Agent(metadata={"name": "bot", "org": ALPHA}))
    owned: Any = skills.create(_skill("owned", "Agent", agent.metadata.id))
    assert owned.metadata.owner_references[0].id == agent.metadata.id
    as_admin = KindClient(with_token(plain, admin), skill_kind)
    assert as_admin.create(_skill("admins", "ApiToken", held.metadata.id)).metadata.slug == "admins"  # type: ignore[attr-defined]


def test_an_apply_is_held_to_the_same_and_a_kept_token_owner_stays_editable(
    app: Application, plain: grpc.Channel
) -> None:
    """An apply that creates is refused as a create is; an update keeps the stored owner references,
    so what an admin attached to a token stays editable by an editor."""
    editor, _ = make_token(app, ALPHA, "editor")
    admin, _ = make_token(app, ALPHA, "admin")
    _, held = make_token(app, ALPHA, "viewer", "held")
    skill_kind = app.registry.kind("Skill")
    skills = KindClient(with_token(plain, editor), skill_kind)
    refused = _refusal(lambda: skills.apply(_skill("applied", "ApiToken", held.metadata.id)))
    assert refused.code() == DENIED
    assert from_rpc_error(refused).metadata["field"] == "metadata.owner_references[0].kind"

    made: Any = KindClient(with_token(plain, admin), skill_kind).create(_skill("kept", "ApiToken", held.metadata.id))
    made.spec.description = "adds, still"
    updated: Any = skills.update(made)
    assert updated.spec.description == "adds, still"
    updated.spec.description = "adds, again"
    assert skills.apply(updated).metadata.owner_references[0].id == held.metadata.id  # type: ignore[attr-defined]


def test_a_delete_refused_for_an_owned_token_does_not_name_it(app: Application, plain: grpc.Channel) -> None:
    editor, _ = make_token(app, ALPHA, "editor")
    admin, _ = make_token(app, ALPHA, "admin")
    agents = KindClient(with_token(plain, editor), app.registry.kind("Agent"))
    agent: Any = agents.create(agent_pb2.Agent(metadata={"name": "bot", "org": ALPHA}))
    token = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role="viewer"))
    token.metadata.name = "owned-tok"
    token.metadata.org = ALPHA
    token.metadata.owner_references.add(kind="Agent", id=agent.metadata.id)
    KindClient(with_token(plain, admin), app.registry.kind("ApiToken")).create(token)
    refused = _refusal(lambda: agents.delete(agent.metadata.id))
    assert refused.code() == DENIED
    assert "owned-tok" not in (refused.details() or "") and "api token" in (refused.details() or "")
    assert agents.get(agent.metadata.id).metadata.id == agent.metadata.id  # type: ignore[attr-defined]
