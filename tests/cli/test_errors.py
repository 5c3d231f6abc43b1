"""Common mistakes: each gets one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Stigmer, write
from .test_resources import CODER


def test_unknown_kind_lists_the_known_ones(stigmer: Stigmer, tmp_path: Path) -> None:
    message = stigmer.fails("get", "widget")
    assert message.startswith("unknown kind 'widget' (known kinds: ")
    assert message.endswith("; `stigmer kinds` lists them)")
    assert {"agent", "agentinstance"} <= set(message.split("known kinds: ")[1].split(";")[0].split(", "))
    path = write(tmp_path / "w.yaml", CODER, "kind: Widget\nmetadata: {name: w}\n")
    assert stigmer.fails("apply", "-f", str(path)).startswith(
        f"{path}, document 2: unknown kind 'Widget' (known kinds:"
    )
    assert "holds no store" in stigmer.fails("get", "agent", "coder")  # nothing was written, no store made


def test_missing_file(stigmer: Stigmer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert stigmer.fails("apply", "-f", str(missing)) == f"{missing}: no such file"
    assert stigmer.fails("import", "-f", str(missing)) == f"{missing}: no such file"


def test_invalid_yaml_names_file_line_and_column(stigmer: Stigmer, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "kind: Agent\nmetadata:\n  name: [unclosed\n")
    message = stigmer.fails("apply", "-f", str(path))
    assert message.startswith(f"{path}: invalid YAML at line 4, column 1:")
    assert stigmer.fails("apply", "-f", "-", input="- just\n- a list\n").startswith(
        "<stdin>, document 1: expected a resource (a mapping with kind, metadata, spec), got a list"
    )


def test_invalid_field_is_named(stigmer: Stigmer, tmp_path: Path) -> None:
    unknown = write(tmp_path / "u.yaml", CODER, CODER.replace("command: git-mcp", "comand: git-mcp"))
    message = stigmer.fails("apply", "-f", str(unknown))
    assert message.startswith(
        f"{unknown}, document 2: spec.mcpServers[0].comand: unknown field (fields of AgentMcpServer:"
    )
    # several in one place are named together: a document written for another release may hold
    # more than one, and fixing them one run at a time took a run each
    several = write(tmp_path / "s.yaml", "kind: Agent\nmetadata: {name: x}\nspec: {instruction: a, descripton: b}\n")
    assert stigmer.fails("apply", "-f", str(several)).startswith(
        f"{several}, document 1: spec.instruction, spec.descripton: unknown fields (fields of AgentSpec:"
    )

    wrong_type = write(tmp_path / "t.yaml", "kind: Agent\nmetadata: {name: x, labels: [a]}\n")
    assert (
        stigmer.fails("apply", "-f", str(wrong_type))
        == f"{wrong_type}, document 1: metadata.labels: expected a mapping, got a list"
    )

    # an enum value it does not have is told with the values it has (protobuf names only the type)
    enum = write(tmp_path / "e.yaml", "kind: AgentExecution\nmetadata: {name: x}\nstatus: {phase: JAPANESE}\n")
    message = stigmer.fails("apply", "-f", str(enum))
    assert "Invalid enum value JAPANESE" in message and "EXECUTION_PENDING" in message, message

    # rules the server enforces come back as field violations, in the document's spelling
    rule = write(tmp_path / "r.yaml", "kind: Agent\nmetadata: {name: x, slug: Not_A_Slug}\n")
    message = stigmer.fails("apply", "-f", str(rule))
    assert message.startswith(f"{rule}, document 1 (agent/Not_A_Slug): metadata.slug: does not match regex pattern")


def test_daemon_not_running(stigmer: Stigmer) -> None:
    data_dir = stigmer.data_dir
    expected = f"the stigmer daemon is not running (data directory {data_dir}); `stigmer local start` starts it"
    assert stigmer.fails("local", "stop") == expected
    assert stigmer.fails("local", "status", code=3) == expected


def test_verbose_adds_details(stigmer: Stigmer, tmp_path: Path) -> None:
    stigmer.ok("backend", "switch", "remote", "--endpoint", "127.0.0.1:1")
    quiet = stigmer("get", "agent")
    assert quiet.code == 1 and len(quiet.err.strip().splitlines()) == 1
    loud = stigmer("get", "agent", "-v")
    assert loud.code == 1 and len(loud.err.strip().splitlines()) > 1


def test_verbose_names_the_status_and_reason_a_refusal_carries(stigmer: Stigmer) -> None:
    """``-v`` added nothing to a refusal from the server: its status and reason, what a script
    in another language matches on, were not shown anywhere."""
    missing = "agt-01jzzzzzzzzzzzzzzzzzzzzzzz"
    quiet = stigmer("call", "agent", "get", "--set", f"value={missing}")
    assert quiet.code == 1 and len(quiet.err.strip().splitlines()) == 1
    loud = stigmer("-v", "call", "agent", "get", "--set", f"value={missing}")
    assert loud.code == 1
    lines = loud.err.strip().splitlines()
    assert lines[0] == quiet.err.strip(), lines
    assert lines[1].strip() == f"status NOT_FOUND, reason NOT_FOUND (id={missing}, kind=Agent)", lines


def test_verbose_names_the_status_of_each_document_apply_and_import_could_not_write(stigmer: Stigmer) -> None:
    """``-v`` added nothing to a document's failure in ``apply`` or ``import``, though the docs
    say it adds a refusal's status, reason and metadata to every command's."""
    missing = "ain-01jzzzzzzzzzzzzzzzzzzzzzzz"
    doc = f"kind: Session\nmetadata: {{name: chat}}\nspec: {{agentInstanceId: {missing}}}\n"
    for command in (("apply", "-f", "-"), ("import",)):
        quiet = stigmer(*command, input=doc)
        assert quiet.code == 1 and "not found" in quiet.err, quiet.err
        assert "status NOT_FOUND" not in quiet.err
        loud = stigmer(*command, "-v", input=doc)
        assert loud.code == 1
        assert "  status NOT_FOUND, reason NOT_FOUND (" in loud.err and f"id={missing}" in loud.err, loud.err


def test_export_needs_kinds_or_all(stigmer: Stigmer) -> None:
    assert stigmer.fails("export", code=2) == "name the kinds to export, or pass --all"  # a usage error


def test_files_that_are_not_yaml_text_are_named_not_unexpected(stigmer: Stigmer, tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("kind: Agent\nmetadata: {name: x}\n", encoding="utf-16")
    error = stigmer.fails("apply", "-f", str(utf16))
    assert error.startswith(f"{utf16}: not UTF-8 text (YAML or JSON)"), error
    deep = write(tmp_path / "deep.yaml", "kind: Agent\nspec: " + "[" * 5000 + "]" * 5000 + "\n")
    error = stigmer.fails("apply", "-f", str(deep))  # libyaml's parser says it; the pure-Python one recursed
    assert error in (f"{deep}: nested too deeply to read", f"{deep}: invalid YAML at line 2, column 1006: exceeded maximum nesting depth"), error
    assert stigmer.fails("call", "agent", "list", "--set", "pageToken=%%%").startswith(
        "--set 'pageToken=%%%': the value is not valid YAML"
    )
    assert stigmer.fails("call", "agent", "list", "-f", str(utf16)).startswith(f"{utf16}: not UTF-8 text")


WORKFLOW = """\
kind: Workflow
metadata: {{name: Billing}}
spec:
  document: {{dsl: 1.0.0, namespace: ops, name: billing, version: 0.1.0}}
  tasks:
    - {{name: charge, kind: set, taskConfig: {{accountId: {account}, limit: 9007199254740992}}, flow: {{then: end}}}}
"""


def test_an_integer_a_struct_would_round_is_refused_naming_the_field(stigmer: Stigmer, tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", WORKFLOW.format(account=9007199254740993))
    message = stigmer.fails("apply", "-f", str(path))
    assert "spec.tasks[0].taskConfig.accountId: 9007199254740993 is a larger integer than" in message, message
    assert 'quote it ("9007199254740993")' in message
    assert stigmer("get", "workflow", "billing").code != 0  # nothing was written
    quoted = write(tmp_path / "quoted.yaml", WORKFLOW.format(account='"9007199254740993"'))
    assert "workflow/billing created" in stigmer.ok("apply", "-f", str(quoted))
    shown = stigmer.ok("get", "workflow", "billing", "-o", "json")
    assert '"accountId": "9007199254740993"' in shown and "9007199254740992" in shown  # 2^53 fits: kept a number
    # whole numbers come back as written (a Struct holds doubles: -3 came back -3.0), the rest as doubles
    stigmer.ok("apply", "-f", "-", input=WORKFLOW.format(account="{neg: -3, rows: [1, 2.5], zero: -0.0}"))
    config = json.loads(stigmer.ok("get", "workflow", "billing", "-o", "json"))["spec"]["tasks"][0]["taskConfig"]
    assert config["accountId"] == {"neg": -3, "rows": [1, 2.5], "zero": -0.0}, config
    assert "neg: -3\n" in stigmer.ok("get", "workflow", "billing", "-o", "yaml")
    # a JSON file `get -o json` wrote, applied back: exponents without a dot stay numbers (YAML 1.1
    # read them as strings, which turned a Struct's 1e+300 into text)
    stigmer.ok("apply", "-f", "-", input=WORKFLOW.format(account="{big: 1e300, tiny: 5e-324}"))
    shown = stigmer.ok("get", "workflow", "billing", "-o", "json")
    assert '"big": 1e+300' in shown and '"tiny": 5e-324' in shown, shown
    stigmer.ok("apply", "-f", "-", input=shown)
    assert stigmer.ok("get", "workflow", "billing", "-o", "json") == shown
    exported = stigmer.ok("export", "workflows")
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    stigmer.ok("import", *restored, input=exported)
    assert stigmer.ok("export", "workflows", *restored) == exported


def test_a_name_that_is_no_slug_is_said_so_and_a_refusal_shows_its_status_with_v(stigmer: Stigmer) -> None:
    """`get agent "Support Bot"` (the display name) was told `invalid ApiResourceReference: slug:
    does not match regex pattern ...`; and `-v` added nothing to `get`, `delete` and `cancel`'s
    refusals, where docs/cli.md promises the status a script matches on."""
    stigmer.ok("apply", "-f", "-", input=CODER.replace("Coder", "Support Bot"))
    said = stigmer.fails("get", "agent", "Support Bot", code=2)
    assert said == (
        "'Support Bot' is neither a slug (lowercase letters, digits and inner dashes) nor an id (agt-…) of agents "
        "(its slug may be 'support-bot')"
    ), said
    field = stigmer.fails("call", "session", "listByAgent", "--set", "agentId=Support-Bot", code=2)
    assert field.startswith("request field agentId: 'Support-Bot' is neither a slug"), field
    for command in (("get", "agent", "nobody"), ("delete", "agent", "nobody"), ("cancel", "agentexecution", "no")):
        result = stigmer(*command, "-v")
        assert result.code == 1, result.err
        lines = result.err.strip().splitlines()
        assert lines[0].endswith("not found in org 'local'") and lines[-1].startswith("  status NOT_FOUND, reason"), lines


def test_a_mistyped_command_gets_the_one_it_likely_meant(stigmer: Stigmer) -> None:
    """`stigmer gett agents` said only "No such command 'gett'", where a mistyped kind gets a suggestion."""
    result = stigmer("gett", "agents")
    assert result.code == 2 and "Error: No such command 'gett' (did you mean 'get'?)." in result.err, result.err
    other = stigmer("xyzzy")
    assert other.code == 2 and "Error: No such command 'xyzzy'." in other.err, other.err


def test_an_org_no_object_can_have_is_a_usage_error(stigmer: Stigmer) -> None:
    """``--org "Bad Org"`` reached the server, which named the list request's regex (exit 1)."""
    result = stigmer("get", "agents", "--org", "Bad Org")
    assert result.code == 2, result.err
    assert result.err.strip().endswith("invalid org 'Bad Org' for --org: lowercase letters, digits and inner dashes, at most 63")
    assert stigmer("get", "agents", "--org", "x" * 64).code == 2
    assert "invalid org" not in stigmer("get", "agents", "--org", "team-a").err
    from_env = stigmer("get", "agents", env={"STIGMER_ORG": "Acme"})  # the environment's, as the flag's
    assert from_env.code == 2 and "invalid org 'Acme' for $STIGMER_ORG" in from_env.err, from_env.err


def test_yaml_mistakes_are_said_in_one_line_naming_a_tab(stigmer: Stigmer) -> None:
    """A tab in a manifest was told "found character that cannot start any token" without the
    tab; a config file that is no YAML printed PyYAML's several lines; an unknown backend in the
    config file did not name the file."""
    tabbed = stigmer.fails("apply", "-f", "-", input="kind: Agent\nmetadata:\n\tname: x\n")
    assert tabbed.endswith("line 3, column 1: found character that cannot start any token (a tab: YAML indents with spaces)")
    config = stigmer.home / "config.yaml"
    stigmer.home.mkdir(parents=True, exist_ok=True)
    config.write_text("backend: [\n  x: : y\n")
    broken = stigmer("get", "agents")
    assert broken.code == 1 and len(broken.err.strip().splitlines()) == 1, broken.err
    assert f"config file {config} is not valid YAML: line 2, column" in broken.err, broken.err
    config.write_text("backend: {type: remot}\n")
    assert stigmer.fails("get", "agents") == f"unknown backend 'remot' (backend.type in {config}): use 'local' or 'remote'"
