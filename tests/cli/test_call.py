"""``stigmer call KIND METHOD``: standard and custom rpcs, requests from flags or YAML, every output."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stigmer_core.ids import derived_id, new_id

from .conftest import Stigmer, write


def _store(stigmer: Stigmer, tmp_path: Path) -> str:
    agent_id = new_id("agt")
    instance = derived_id("ain", agent_id, "default")
    documents = [
        f"apiVersion: agentic.stigmer.ai/v1\nkind: Agent\nmetadata: {{name: Support Bot, id: {agent_id}}}\nspec: {{description: Helps}}\n",
        f"kind: Session\nmetadata: {{name: First Chat}}\nspec: {{agentInstanceId: {instance}, subject: hello}}\n",
    ]
    stigmer.ok("apply", "-f", str(write(tmp_path / "docs.yaml", *documents)))
    return agent_id


def test_standard_and_custom_rpcs(stigmer: Stigmer, tmp_path: Path) -> None:
    agent_id = _store(stigmer, tmp_path)
    shown = yaml.safe_load(stigmer.ok("call", "agent", "get", "--set", f"value={agent_id}", "-o", "yaml"))
    assert shown["metadata"]["slug"] == "support-bot"
    table = stigmer.ok("call", "agent", "getByReference", "--set", "slug=support-bot")
    assert table.split("\n")[1].split()[:2] == ["support-bot", agent_id]
    listed = json.loads(stigmer.ok("call", "session", "listByAgent", "--set", f"agentId={agent_id}", "-o", "json"))
    assert [s["metadata"]["slug"] for s in listed] == ["first-chat"]
    request = tmp_path / "request.yaml"
    request.write_text(f"agentId: {agent_id}\npageSize: 1\n")
    assert "first-chat" in stigmer.ok("call", "sessions", "listByAgent", "-f", str(request))


def test_an_empty_answer_is_said_on_stderr_and_stays_empty_on_stdout(stigmer: Stigmer, tmp_path: Path) -> None:
    """A list answering nothing printed nothing at all, as if the command had not run."""
    agent_id = _store(stigmer, tmp_path)
    for output in ("table", "yaml"):
        result = stigmer("call", "session", "listByAgent", "--set", f"agentId={new_id('agt')}", "-o", output)
        assert (result.code, result.out, result.err.strip()) == (0, "", "no sessions in the answer"), result
    result = stigmer("call", "session", "listByAgent", "--set", f"agentId={new_id('agt')}", "-o", "json")
    assert (result.code, json.loads(result.out), result.err) == (0, [], "")
    assert "no sessions" not in stigmer("call", "session", "listByAgent", "--set", f"agentId={agent_id}").err


def test_bad_calls_say_what_is_wrong(stigmer: Stigmer, tmp_path: Path) -> None:
    assert "has no rpc 'render'" in stigmer.fails("call", "agent", "render")
    assert "noSuchField" in stigmer.fails("call", "agent", "get", "--set", "noSuchField=1")
    message = stigmer.fails("call", "agent", "get", "--set", f"value={new_id('agt')}")
    assert "not found" in message


def test_a_slug_for_an_id_field_is_resolved_or_refused_by_name(stigmer: Stigmer, tmp_path: Path) -> None:
    _store(stigmer, tmp_path)
    listed = json.loads(stigmer.ok("call", "session", "listByAgent", "--set", "agentId=support-bot", "-o", "json"))
    assert [s["metadata"]["slug"] for s in listed] == ["first-chat"]
    stigmer.ok("call", "agentexecution", "listBySession", "--set", "sessionId=first-chat")
    lost = stigmer.fails("call", "agentexecution", "listBySession", "--set", "sessionId=lost-chat")
    assert "request field sessionId: session 'lost-chat' not found in org 'local'" in lost
    shown = yaml.safe_load(stigmer.ok("call", "agent", "get", "--set", "value=support-bot", "-o", "yaml"))
    assert shown["metadata"]["slug"] == "support-bot"
    skill = "kind: Skill\nmetadata: {name: Deploy}\nspec: {skillMd: '# Deploy', tag: v1}\n"
    stigmer.ok("apply", "-f", str(write(tmp_path / "skill.yaml", skill)))
    versions = stigmer.ok("call", "skill", "listVersions", "--set", "skillId=deploy", "-o", "json")
    assert "v1" in versions, versions
    missing = stigmer.fails("call", "session", "listByAgent", "--set", "agentId=nobody")
    assert "request field agentId: agent 'nobody' not found in org 'local'" in missing
    unknown = stigmer.fails("call", "executioncontext", "list", "--set", "executionId=first-run")
    assert "request field executionId: 'first-run' is not an id" in unknown and "give the id" in unknown


def test_a_listing_call_follows_every_page_unless_a_page_is_asked_for(stigmer: Stigmer, tmp_path: Path) -> None:
    agent_id = _store(stigmer, tmp_path)
    instance = derived_id("ain", agent_id, "default")
    sessions = [
        f"kind: Session\nmetadata: {{name: Chat {n}}}\nspec: {{agentInstanceId: {instance}, subject: s}}\n"
        for n in range(105)
    ]
    stigmer.ok("apply", "-f", str(write(tmp_path / "many.yaml", *sessions)))
    listed = json.loads(stigmer.ok("call", "session", "listByAgent", "--set", f"agentId={agent_id}", "-o", "json"))
    assert len(listed) == 106
    table = stigmer.ok("call", "session", "list")
    assert len([line for line in table.splitlines() if line.strip()]) == 107
    by_agent = ("call", "session", "listByAgent", "--set", f"agentId={agent_id}")
    one_page = stigmer(*by_agent, "--set", "pageSize=50", "-o", "yaml")
    assert one_page.code == 0, one_page.err
    assert len([doc for doc in yaml.safe_load_all(one_page.out) if doc]) == 50
    assert "more remain: the next page is --set pageToken=" in one_page.err
    token = one_page.err.split("pageToken=")[1].split()[0]
    rest = stigmer(*by_agent, "--set", f"pageToken={token}", "-o", "json")
    assert len(json.loads(rest.out)) == 56 and "more remain" not in rest.err


def test_every_page_of_any_paged_answer_is_followed(stigmer: Stigmer, tmp_path: Path) -> None:
    """listTags answers its items in ``tags``, not ``entries``: its first 100 passed for the whole."""
    md = "---\nname: many\ndescription: Many tags.\n---\nStep.\n"
    skill = f"kind: Skill\nmetadata: {{name: many}}\nspec: {{skillMd: {json.dumps(md)}, tag: t0}}\n"
    stigmer.ok("apply", "-f", str(write(tmp_path / "skill.yaml", skill)))
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient

    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        for n in range(1, 105):
            skills.call("push", skill_pb2.PushSkillRequest(slug="many", skill_md=md, tag=f"t{n}"))
    tags = json.loads(stigmer.ok("call", "skill", "listTags", "--set", "skillId=many", "-o", "json"))
    assert sorted(t["tag"] for t in tags["tags"]) == sorted(f"t{n}" for n in range(105))
    assert "nextPageToken" not in tags
    first = stigmer("call", "skill", "listTags", "--set", "skillId=many", "--set", "pageSize=10", "-o", "json")
    assert first.code == 0 and len(json.loads(first.out)["tags"]) == 10, first.err
    assert "more remain: the next page is --set pageToken=" in first.err
