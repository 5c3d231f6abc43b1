"""An agent's skill references stay in its org and name skills, as environment references do.

A reference naming another org is refused with one message whether that org
or skill exists or not; one by an id the caller cannot see is kept (refusing
it would tell that the id exists elsewhere). A reference is not resolved when
written, so a skill may be made after the agent naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from tests.auth_support import ALPHA, BETA, make_token, requiring_tokens, served, with_token

MD = "---\nname: Calculator\ndescription: Adds numbers\n---\n# Calc\n"


@pytest.fixture
def app(tmp_path: Any, stigmer_store: str | None) -> Iterator[Application]:
    """Once per engine: a team server keeps orgs apart on PostgreSQL as a daemon does on LMDB."""
    with requiring_tokens(tmp_path, stigmer_store) as app:
        yield app


@pytest.fixture
def network(app: Application) -> Iterator[grpc.Channel]:
    with served(app, max_workers=2) as server, grpc.insecure_channel(server.address) as channel:
        yield channel


def _skill(app: Application, org: str, name: str = "calc") -> Any:
    skill = skill_pb2.Skill()
    skill.metadata.name = name
    skill.metadata.org = org
    skill.spec.skill_md = MD
    return KindClient(app.channel(), app.registry.kind("Skill")).create(skill)


def _agent(org: str, name: str, *refs: dict[str, str]) -> agent_pb2.Agent:
    agent = agent_pb2.Agent()
    agent.metadata.name = name
    agent.metadata.org = org
    agent.spec.instructions = "Be brief."
    agent.spec.skill_refs.extend(metadata_pb2.ApiResourceReference(**ref) for ref in refs)
    return agent


def _refusal(call: Any) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    try:
        call()
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            return exc.code(), []
        return exc.code(), [(v.field, v.description) for v in from_rpc_error(exc).violations]  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, []


def test_a_skill_of_another_org_is_refused_alike_whether_it_exists_or_not(
    app: Application, network: grpc.Channel
) -> None:
    _skill(app, BETA)
    editor, _ = make_token(app, ALPHA, "editor")
    agents = KindClient(with_token(network, editor), app.registry.kind("Agent"))
    answers = [
        _refusal(lambda ref=ref: agents.create(_agent(ALPHA, "pin", ref)))
        for ref in (
            {"org": BETA, "slug": "calc"},  # exists there
            {"org": BETA, "slug": "nothing-here"},
            {"org": "nonexistent-org", "slug": "calc"},
        )
    ]
    assert answers[0][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in answers[0][1]] == ["spec.skill_refs[0]"]
    assert answers[0] == answers[1] == answers[2], "the answer tells nothing about other orgs"
    assert "references never cross orgs" in answers[0][1][0][1]
    assert list(agents.list_page(org=ALPHA).entries) == []  # nothing half-written: no agent, no instance


def test_a_reference_naming_another_kind_is_refused_on_its_kind(app: Application, network: grpc.Channel) -> None:
    editor, _ = make_token(app, ALPHA, "editor")
    agents = KindClient(with_token(network, editor), app.registry.kind("Agent"))
    code, violations = _refusal(
        lambda: agents.create(_agent(ALPHA, "kinds", {"slug": "calc"}, {"org": "nonexistent-org", "kind": "Environment"}))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations] == ["spec.skill_refs[1].kind"]
    assert "'Environment' is not Skill" in violations[0][1]
    code, violations = _refusal(lambda: agents.create(_agent(ALPHA, "nokind", {"kind": "NoSuchKind", "slug": "calc"})))
    assert [field for field, _ in violations] == ["spec.skill_refs[0].kind"]
    # The environment references follow the same rule.
    wrong = _agent(ALPHA, "envkind")
    wrong.spec.environment_refs.add(kind="Skill", slug="prod")
    assert [field for field, _ in _refusal(lambda: agents.create(wrong))[1]] == ["spec.environment_refs[0].kind"]


def test_skill_references_of_its_own_org_are_kept_as_sent(app: Application, network: grpc.Channel) -> None:
    skill = _skill(app, ALPHA)
    editor, _ = make_token(app, ALPHA, "editor")
    agents = KindClient(with_token(network, editor), app.registry.kind("Agent"))
    refs = (
        {"slug": "calc", "version": "latest"},
        {"org": ALPHA, "kind": "Skill", "slug": "calc", "version": skill.metadata.version.id},
        {"kind": "skill", "id": skill.metadata.id},
        {"kind": "sk", "slug": "made-later"},  # not resolved when written: apply may write the skill next
    )
    made: Any = agents.create(_agent(ALPHA, "own", *refs))
    assert [dict(org=r.org, kind=r.kind, slug=r.slug, version=r.version, id=r.id) for r in made.spec.skill_refs] == [
        {"org": "", "kind": "", "slug": "", "version": "", "id": ""} | ref for ref in refs
    ]
    moved: Any = agent_pb2.Agent()
    moved.CopyFrom(made)
    moved.spec.skill_refs[2].org = BETA
    code, violations = _refusal(lambda: agents.update(moved))
    assert (code, [field for field, _ in violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["spec.skill_refs[2]"])
    assert agents.get(made.metadata.id) == made


def test_an_id_is_refused_when_the_caller_sees_it_in_another_org_and_kept_when_it_cannot(app: Application) -> None:
    theirs = _skill(app, BETA)
    ours = _skill(app, ALPHA)
    admin = KindClient(app.channel(), app.registry.kind("Agent"))  # the local administrator sees every org
    code, violations = _refusal(lambda: admin.create(_agent(ALPHA, "pin", {"id": theirs.metadata.id})))
    assert (code, [field for field, _ in violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["spec.skill_refs[0]"])
    admin.create(_agent(ALPHA, "same", {"id": ours.metadata.id}))
    editor, _ = make_token(app, ALPHA, "editor")
    agents = KindClient(with_token(app.channel(), editor), app.registry.kind("Agent"))
    # Refusing it would tell alpha that the id exists in another org; kept, it names nothing alpha can use.
    kept: Any = agents.create(_agent(ALPHA, "by id", {"id": theirs.metadata.id}))
    assert kept.spec.skill_refs[0].id == theirs.metadata.id
