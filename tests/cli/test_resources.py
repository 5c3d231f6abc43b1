"""``apply``, ``get``, ``list``, ``delete``, ``kinds`` against a running daemon."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stigmer_core.ids import new_id

from .conftest import Stigmer, lines, write

AGENT_ID = new_id("agt")

# The instance comes first in the file and names its agent by the id the agent
# document asks for: only dependency order makes this file apply cleanly.
INSTANCE = f"""\
kind: agent-instance
metadata:
  name: Support Bot (eu)
  labels: {{region: eu}}
spec:
  agentId: {AGENT_ID}
  description: EU deployment
"""
SUPPORT = f"""\
apiVersion: agentic.stigmer.ai/v1
kind: Agent
metadata:
  id: {AGENT_ID}
  name: Support Bot
  labels: {{team: support}}
spec:
  description: Answers customer questions
  instructions: |
    Be helpful.
    Be brief.
"""
CODER = """\
kind: agents
metadata:
  name: Coder
  labels: {team: platform}
spec:
  mcpServers:
    - name: git
      command: git-mcp
"""


def _apply_sample(stigmer: Stigmer, tmp_path: Path) -> Path:
    path = write(tmp_path / "agents.yaml", INSTANCE, SUPPORT, CODER)
    out = stigmer.ok("apply", "-f", str(path))
    assert lines(out) == ["agent/support-bot created", "agent/coder created", "agentinstance/support-bot-eu created"]
    return path


def test_apply_multi_document_in_dependency_order(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    path = _apply_sample(stigmer, tmp_path)

    again = stigmer.ok("apply", "-f", str(path))
    assert lines(again) == [
        "agent/support-bot unchanged",
        "agent/coder unchanged",
        "agentinstance/support-bot-eu unchanged",
    ]

    changed = write(tmp_path / "coder.yaml", CODER.replace("git-mcp", "git-mcp --verbose"))
    assert lines(stigmer.ok("apply", "-f", str(changed))) == ["agent/coder configured"]

    spec = yaml.safe_load(stigmer.ok("get", "agent", "coder", "-o", "yaml"))["spec"]
    assert spec["mcpServers"][0]["command"] == "git-mcp --verbose"


def test_apply_from_stdin_and_directory(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    assert lines(stigmer.ok("apply", "-f", "-", input=CODER)) == ["agent/coder created"]
    folder = tmp_path / "manifests"
    folder.mkdir()
    write(folder / "b.yaml", SUPPORT)
    write(folder / "a.yml", INSTANCE)
    (folder / "notes.txt").write_text("not a manifest")
    assert lines(stigmer.ok("apply", "-f", str(folder))) == [
        "agent/support-bot created",
        "agentinstance/support-bot-eu created",
    ]


def test_dry_run_writes_nothing(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    path = write(tmp_path / "coder.yaml", CODER)
    assert lines(stigmer.ok("apply", "--dry-run", "-f", str(path))) == ["agent/coder created (dry run)"]
    assert stigmer.fails("get", "agent", "coder") == "agent 'coder' not found in org 'local'"
    bad = write(tmp_path / "bad.yaml", CODER.replace("name: git", "name: ''"))
    message = stigmer.fails("apply", "--dry-run", "-f", str(bad))
    assert "document 1" in message and "spec.mcpServers[0].name" in message
    # a session naming, by slug, the instance another document of the run creates: a real apply
    # creates the instance first, so the dry run says so rather than "not found"
    session = "kind: session\nmetadata:\n  name: Chat\nspec:\n  agentInstanceId: support-bot-eu\n"
    both = write(tmp_path / "both.yaml", session, INSTANCE, SUPPORT)
    assert lines(stigmer.ok("apply", "--dry-run", "-f", str(both))) == [
        "agent/support-bot created (dry run)",
        "agentinstance/support-bot-eu created (dry run)",
        "session/chat created (dry run)",
    ]
    # the instance alone names, by id, an agent neither the store nor the run has: the server says so
    instance = write(tmp_path / "instance.yaml", INSTANCE)
    assert f"agent '{AGENT_ID}' not found" in stigmer.fails("apply", "--dry-run", "-f", str(instance))
    alone = write(tmp_path / "alone.yaml", session)  # not found and not planned: said, not refused
    (said,) = lines(stigmer.ok("apply", "--dry-run", "-f", str(alone)))
    assert said.startswith("session/chat created (dry run; ") and "'support-bot-eu' not found in org 'local' now" in said


def test_dry_run_of_stored_objects_is_the_servers(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    """With every reference found, the server rehearses the write: an identical document is
    unchanged, an edited one configured, and what only the server checks is refused; nothing is
    stored either way."""
    path = write(tmp_path / "coder.yaml", CODER)
    stigmer.ok("apply", "-f", str(path))
    stored = stigmer.ok("get", "agent", "coder", "-o", "yaml")
    assert lines(stigmer.ok("apply", "--dry-run", "-f", str(path))) == ["agent/coder unchanged (dry run)"]
    edited = write(tmp_path / "edited.yaml", CODER.replace("git-mcp", "git-mcp2"))
    assert lines(stigmer.ok("apply", "--dry-run", "-f", str(edited))) == ["agent/coder configured (dry run)"]
    # a session of an instance id nothing has: no client-side check sees it, the server's pipeline does
    dangling = write(tmp_path / "dangling.yaml", "kind: session\nmetadata: {name: Chat}\nspec: {agentInstanceId: ain-00000000000000000000000000}\n")
    message = stigmer.fails("apply", "--dry-run", "-f", str(dangling))
    assert "document 1" in message and "ain-00000000000000000000000000' not found" in message, message
    assert stigmer.fails("get", "session", "chat") == "session 'chat' not found in org 'local'"
    # an export names its objects by id: restored over what is stored, every one is found there, so
    # the server rehearses each (an instance naming its agent's id was only checked by the client)
    backup = write(tmp_path / "backup.yaml", stigmer.ok("export", "agent", "agentinstance"))
    assert lines(stigmer.ok("apply", "--dry-run", "-f", str(backup))) == [
        "agent/coder unchanged (dry run)",
        "agentinstance/coder-default unchanged (dry run)",
    ]
    assert stigmer.ok("get", "agent", "coder", "-o", "yaml") == stored


def test_applying_what_get_printed_is_a_guarded_write(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    """`get -o yaml` prints the object's resourceVersion: applied back, it updates the object while
    nothing wrote it since, is refused stale once something did, and is refused (not created
    again) once the object was deleted."""
    stigmer.ok("apply", "-f", "-", input=CODER)
    printed = stigmer.ok("get", "agent", "coder", "-o", "yaml")
    read = write(tmp_path / "read.yaml", printed.replace("git-mcp", "git-mcp2"))
    assert "resourceVersion" in read.read_text()
    assert lines(stigmer.ok("apply", "-f", str(read))) == ["agent/coder configured"]
    stale = stigmer("apply", "-f", str(read))
    assert stale.code == 1 and "is stale" in stale.err, stale
    again = write(tmp_path / "again.yaml", stigmer.ok("get", "agent", "coder", "-o", "yaml"))
    stigmer.ok("delete", "agent", "coder")
    gone = stigmer("apply", "-f", str(again))
    assert gone.code == 1 and "is not stored" in gone.err and "without metadata.resource_version" in gone.err, gone
    assert stigmer.fails("get", "agent", "coder") == "agent 'coder' not found in org 'local'"
    # without its version the same document creates the agent again
    unguarded = write(
        tmp_path / "unguarded.yaml",
        "\n".join(line for line in again.read_text().splitlines() if "resourceVersion" not in line),
    )
    assert lines(stigmer.ok("apply", "-f", str(unguarded))) == ["agent/coder created"]


def test_get_in_all_three_formats(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    _apply_sample(stigmer, tmp_path)

    table = lines(stigmer.ok("get", "agent"))
    assert table[0].split()[:4] == ["NAME", "ID", "AGE", "DEFAULT"]
    assert sorted(row.split()[0] for row in table[1:]) == ["coder", "support-bot"]
    support_row = next(row for row in table if row.startswith("support-bot"))
    assert AGENT_ID in support_row and "ain-" in support_row

    as_yaml = yaml.safe_load(stigmer.ok("get", "agent", "support-bot", "-o", "yaml"))
    assert as_yaml["kind"] == "Agent" and as_yaml["apiVersion"] == "agentic.stigmer.ai/v1"
    assert as_yaml["metadata"]["id"] == AGENT_ID and as_yaml["metadata"]["labels"] == {"team": "support"}
    assert as_yaml["spec"]["instructions"] == "Be helpful.\nBe brief.\n"

    as_json = json.loads(stigmer.ok("get", "agent", AGENT_ID, "-o", "json"))
    assert as_json["metadata"]["slug"] == "support-bot"
    assert as_json["status"]["defaultInstanceId"].startswith("ain-")

    every = json.loads(stigmer.ok("get", "AgentInstances", "-o", "json"))
    assert len(every) == 3


def test_kind_names_singular_plural_short_any_case(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    _apply_sample(stigmer, tmp_path)
    for name in ("agent", "agents", "AGENT", "Agents", "ag"):
        assert "support-bot" in stigmer.ok("get", name, "support-bot")
    kinds = stigmer.ok("kinds")
    assert "stigmer.agentic.agent.v1.AgentCommandController" in kinds
    assert "stigmer.agentic.agentinstance.v1.AgentInstanceQueryController" in kinds


def test_list_with_labels_limit_and_org(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    _apply_sample(stigmer, tmp_path)
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER.replace("Coder", "Acme Coder"))

    labelled = lines(stigmer.ok("list", "agent", "-l", "team=platform"))
    assert [row.split()[0] for row in labelled[1:]] == ["coder"]
    by_label = lines(stigmer.ok("list", "agent", "--label", "team=platform"))  # what users try first
    assert [row.split()[0] for row in by_label[1:]] == ["coder"]
    assert len(lines(stigmer.ok("list", "agentinstance", "--limit", "2"))) == 3  # header + 2
    assert [row.split()[0] for row in lines(stigmer.ok("list", "agent", "--org", "acme"))[1:]] == ["acme-coder"]
    every = lines(stigmer.ok("list", "agent", "-A"))
    assert every[0].split()[0] == "ORG" and len(every) == 4
    # by org, then as one org's list is, by slug (it was by creation across orgs)
    shown = [tuple(row.split()[:2]) for row in every[1:]]
    assert shown == sorted(shown) and shown[0] == ("acme", "acme-coder"), shown

    empty = stigmer("list", "agent", "-l", "team=nobody")
    assert empty.code == 0 and empty.out == "" and "no agents with labels team=nobody found in org 'local'" in empty.err
    assert stigmer.fails("list", "agent", "-l", "team", code=2) == "invalid label selector 'team': use key=value"
    # kubectl's comma-separated form, each pair required (a label value never holds a comma)
    assert [row.split()[0] for row in lines(stigmer.ok("list", "agent", "-l", "team=platform,"))[1:]] == ["coder"]
    both = stigmer("list", "agent", "-l", "team=platform,tier=gold")
    assert both.code == 0 and "no agents with labels team=platform,tier=gold found" in both.err, both.err
    assert stigmer.fails("list", "agent", "-l", "team=platform,tier", code=2) == (
        "invalid label selector 'tier' (in 'team=platform,tier'): use key=value"
    )


def test_delete_by_slug_and_by_id(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    _apply_sample(stigmer, tmp_path)
    assert lines(stigmer.ok("delete", "agent", "coder")) == [
        "agent/coder deleted",
        "agentinstance/coder-default deleted with it",
    ]
    assert stigmer.fails("get", "agent", "coder") == "agent 'coder' not found in org 'local'"
    assert stigmer.fails("delete", "agent", "coder") == "agent 'coder' not found in org 'local'"

    deleted = lines(stigmer.ok("delete", "agents", AGENT_ID))
    assert deleted[0] == "agent/support-bot deleted"
    assert sorted(deleted[1:]) == [
        "agentinstance/support-bot-default deleted with it",
        "agentinstance/support-bot-eu deleted with it",
    ]
    # deleting an agent deletes the instances it owns
    empty = stigmer("get", "agentinstance")
    assert empty.code == 0 and empty.out == ""


def test_an_empty_list_in_an_org_from_the_config_says_where_the_org_came_from(stigmer: Stigmer) -> None:
    """After `login` the CLI acts in the token's org on the local backend too: `get agents
    --data-dir ~/local` said only "no agents found in org 'acme'" of a store holding agents in 'local'."""
    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.home.joinpath("config.yaml").write_text("org: acme\n")
    empty = stigmer("get", "agents")
    assert empty.code == 0 and not empty.out, empty
    assert empty.err.strip() == (
        "no agents found in org 'acme' (the org comes from the config file or $STIGMER_ORG; give --org ORG, "
        "or -A for every org)"
    ), empty.err
    typed = stigmer("get", "agents", "--org", "acme")
    assert typed.err.strip() == "no agents found in org 'acme'", typed.err
    assert "coder" in stigmer.ok("get", "agents", "-A")


def test_a_command_on_objects_refuses_a_data_dir_holding_no_store_and_makes_none(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """A mistyped --data-dir was made into a new store: `get` said there was nothing, `export` wrote
    a valid empty backup, `token list` showed no token to revoke again after a restore, and
    `doctor`, which refuses a directory holding no store, then passed on the one they made."""
    typo = tmp_path / "typo"
    for command in (
        ("get", "agents"),
        ("list", "agents"),
        ("export", "--all"),
        ("token", "list"),
        ("token", "revoke", "nobody"),
        ("delete", "agent", "coder"),
        ("cancel", "agentexecution", "run"),
    ):
        said = stigmer.fails(*command, "--data-dir", str(typo))
        name = " ".join(command[:2]) if command[0] == "token" else command[0]
        assert said.startswith(f"{typo} holds no store, so `stigmer {name}` has nothing to work on"), said
        assert not (typo / "data.mdb").exists() and not (typo / "secret.key").exists(), command
    assert "holds no store" in stigmer.fails("doctor", "--data-dir", str(typo))
    stigmer.ok("apply", "-f", "-", "--data-dir", str(typo), input=CODER)  # a write makes it
    assert "coder" in stigmer.ok("get", "agents", "--data-dir", str(typo))


def test_an_object_whose_slug_has_an_ids_shape_is_named_by_it(stigmer: Stigmer) -> None:
    """A store written before the server refused such slugs may hold one (and a backup of it
    restores it, giving its id): `get agent <slug>` looked it up by id only and said not found,
    though `get agents` listed it under that name."""
    from stigmer_core.ids import new_id

    slug, own_id = new_id("agt"), new_id("agt")
    stigmer.ok("apply", "-f", "-", input=f"kind: Agent\nmetadata: {{name: Legacy, slug: {slug}, id: {own_id}}}\n")
    assert slug in stigmer.ok("get", "agents")
    shown = stigmer.ok("get", "agent", slug, "-o", "json")
    assert f'"id": "{own_id}"' in shown, shown
    assert stigmer.ok("delete", "agent", slug).splitlines()[0] == f"agent/{slug} deleted"
    assert stigmer.fails("get", "agent", slug) == f"agent '{slug}' not found in org 'local'"
