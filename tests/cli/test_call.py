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


def test_a_version_list_shows_each_version_and_tag(stigmer: Stigmer, tmp_path: Path) -> None:
    """``call skill listVersions`` printed one identical row per version: the table had no column
    telling them apart."""
    for tag, text in (("v1", "# Deploy"), ("v2", "# Deploy, now twice")):
        skill = f"kind: Skill\nmetadata: {{name: Deploy}}\nspec: {{skillMd: '{text}', tag: {tag}}}\n"
        stigmer.ok("apply", "-f", str(write(tmp_path / f"{tag}.yaml", skill)))
    header, *rows = stigmer.ok("call", "skill", "listVersions", "--set", "skillId=deploy").splitlines()
    assert header.split()[-2:] == ["VERSION", "TAG"], header
    assert sorted(row.split()[-1] for row in rows) == ["v1", "v2"]
    assert len({row.split()[-2] for row in rows}) == 2  # two versions, told apart


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


def test_a_string_or_bytes_field_is_read_from_a_file(stigmer: Stigmer, tmp_path: Path) -> None:
    """A skill's SKILL.md opens with `---`, which --set reads as a YAML document marker, and its zip
    is bytes: --set-file takes a string field's text and a bytes field's bytes from a file."""
    import io
    import zipfile

    markdown = "---\nname: notes\ndescription: take notes\n---\n# Notes\nDo it.\n"
    skill_md = write(tmp_path / "SKILL.md", markdown)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("SKILL.md", markdown)
    artifact = tmp_path / "notes.zip"
    artifact.write_bytes(packed.getvalue())

    inline = stigmer("call", "skill", "push", "--set", "name=notes", "--set", f"skillMd={markdown}")
    assert inline.code == 1 and "the value is not valid YAML" in inline.err, inline
    assert "--set-file skillMd=PATH" in inline.err
    pushed = stigmer.ok(
        "call", "skill", "push", "--set", "name=notes", "--set-file", f"skillMd={skill_md}",
        "--set-file", f"artifact={artifact}", "-o", "yaml",
    )  # fmt: skip
    assert yaml.safe_load(pushed)["spec"]["skillMd"] == markdown
    listed = yaml.safe_load(stigmer.ok("call", "skill", "listVersions", "--set", "skillId=notes", "-o", "yaml"))
    assert listed, listed

    refusals = {
        f"skillMd={artifact}": f"{artifact} is not UTF-8 text, and skillMd is a string field",
        f"nosuch={artifact}": "request stigmer.agentic.skill.v1.PushSkillRequest has no field nosuch",
        f"skillMd={tmp_path / 'absent.md'}": f"cannot read {tmp_path / 'absent.md'}: No such file or directory",
    }
    for given, said in refusals.items():
        assert said in stigmer.fails("call", "skill", "push", "--set", "name=notes", "--set-file", given), given
    assert "use field=PATH" in stigmer.fails("call", "skill", "push", "--set-file", "skillMd", code=2)
    big = tmp_path / "big.md"
    big.write_bytes(b"x" * ((4 << 20) + 1))
    assert "more than a request may carry" in stigmer.fails("call", "skill", "push", "--set-file", f"skillMd={big}")
