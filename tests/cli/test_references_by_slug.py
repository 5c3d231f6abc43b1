"""A document may name a referenced object by slug where the API takes an id; ``apply`` resolves it."""

from __future__ import annotations

import json
from pathlib import Path

from stigmer_core.ids import derived_id, new_id

from .conftest import Stigmer, write

AGENT = "kind: Agent\nmetadata: {{name: Support Bot, id: {id}}}\nspec: {{description: Helps}}\n"


def test_a_slug_is_resolved_to_the_id_in_the_documents_org(stigmer: Stigmer, tmp_path: Path) -> None:
    agent_id = new_id("agt")
    session = "kind: Session\nmetadata: {name: First Chat}\nspec: {agentInstanceId: support-bot-default, subject: hi}\n"
    out = stigmer.ok("apply", "-f", str(write(tmp_path / "docs.yaml", AGENT.format(id=agent_id), session)))
    assert "session/first-chat created" in out, out
    stored = json.loads(stigmer.ok("get", "session", "first-chat", "-o", "json"))
    assert stored["spec"]["agentInstanceId"] == derived_id("ain", agent_id, "default")


def test_a_slug_that_names_nothing_is_refused_naming_the_field(stigmer: Stigmer, tmp_path: Path) -> None:
    session = "kind: Session\nmetadata: {name: Lost}\nspec: {agentInstanceId: nobody-default, subject: hi}\n"
    result = stigmer("apply", "-f", str(write(tmp_path / "docs.yaml", session)))
    assert result.code == 1
    assert "spec.agentInstanceId: agent instance 'nobody-default' not found in org 'local'" in result.out + result.err
    assert stigmer("get", "session", "lost").code != 0


def test_an_agent_instance_names_its_agent_by_slug_and_goes_with_it(stigmer: Stigmer, tmp_path: Path) -> None:
    agent_id = new_id("agt")
    instance = "kind: AgentInstance\nmetadata: {name: Ops Extra}\nspec: {agentId: support-bot}\n"
    out = stigmer.ok("apply", "-f", str(write(tmp_path / "docs.yaml", AGENT.format(id=agent_id), instance)))
    assert "agentinstance/ops-extra created" in out, out
    stored = json.loads(stigmer.ok("get", "agentinstance", "ops-extra", "-o", "json"))
    assert stored["spec"]["agentId"] == agent_id
    assert "unchanged" in stigmer.ok("apply", "-f", str(tmp_path / "docs.yaml"))
    stigmer.ok("delete", "agent", "support-bot")
    for gone in ("ops-extra", "support-bot-default"):
        assert stigmer("get", "agentinstance", gone).code != 0
