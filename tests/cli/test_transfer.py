"""``export`` and ``import``: a backup restores to the same bytes."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from stigmer_plugins.secret_box import fingerprint

from .conftest import Stigmer, stored_nothing, write
from .test_resources import CODER, INSTANCE, SUPPORT


def test_export_import_round_trip_is_byte_identical(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    stigmer.ok("apply", "-f", str(write(tmp_path / "all.yaml", INSTANCE, SUPPORT, CODER)))
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER)
    first = stigmer.ok("export", "--all", "-A")

    documents = list(yaml.safe_load_all(first))
    assert [(d["kind"], d["metadata"]["org"], d["metadata"]["slug"]) for d in documents] == [
        ("Agent", "acme", "coder"),
        ("Agent", "local", "coder"),
        ("Agent", "local", "support-bot"),
        ("AgentInstance", "acme", "coder-default"),
        ("AgentInstance", "local", "coder-default"),
        ("AgentInstance", "local", "support-bot-default"),
        ("AgentInstance", "local", "support-bot-eu"),
    ]
    for document in documents:
        assert "status" not in document
        assert not {"resourceVersion", "createdAt", "updatedAt"} & set(document["metadata"])
    # ids are kept, the default instances' too: theirs derive from their agent's, so import makes them again
    assert all(d["metadata"].get("id") for d in documents)

    empty_store = str(tmp_path / "restored" / "data")
    imported = stigmer.ok("import", "--data-dir", empty_store, input=first)
    assert imported.strip() == "imported 7 of 7 resources (7 created)"  # default instances too: the store was empty
    second = stigmer.ok("export", "--all", "-A", "--data-dir", empty_store)
    assert second == first

    again = stigmer.ok("import", "--data-dir", empty_store, input=first)
    assert again.strip() == "imported 7 of 7 resources (7 unchanged)"
    assert stigmer.ok("export", "--all", "-A", "--data-dir", empty_store) == first


def test_export_selected_kinds_and_org(stigmer: Stigmer, daemon: str) -> None:
    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER)
    exported = list(yaml.safe_load_all(stigmer.ok("export", "agents")))
    assert [(d["kind"], d["metadata"]["org"]) for d in exported] == [("Agent", "local")]
    acme = list(yaml.safe_load_all(stigmer.ok("export", "ag", "ai", "--org", "acme")))
    assert [(d["kind"], d["metadata"]["org"]) for d in acme] == [("Agent", "acme"), ("AgentInstance", "acme")]


def test_import_reads_files_and_reports_failures(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    bad = write(tmp_path / "backup.yaml", CODER, CODER.replace("Coder", "Bad").replace("name: git", "name: ''"))
    result = stigmer("import", "-f", str(bad))
    assert result.code == 1
    assert result.out.strip() == "imported 1 of 2 resources (1 created, 1 failed)"
    assert f"{bad}, document 2 (agent/bad): spec.mcpServers[0].name" in result.err


def test_an_import_into_orgs_this_cli_does_not_act_in_says_where_they_went(stigmer: Stigmer, tmp_path: Path) -> None:
    """A team server's export imported into a local store keeps its org; `stigmer get` in org
    'local' would then find nothing, so the import says where the objects are and how to see them."""
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER)
    backup = stigmer.ok("export", "agents", "--org", "acme")
    fresh = str(tmp_path / "fresh" / "data")

    moved = stigmer("import", "--data-dir", fresh, input=backup)
    assert moved.code == 0 and moved.out.strip() == "imported 1 of 1 resources (1 created)", moved
    assert (
        "note: the resources are in org 'acme', and this CLI acts in org 'local': give --org acme to see them "
        "(or import with --to-org local to put them in 'local')"
    ) in moved.err
    assert "coder" in stigmer.ok("get", "agents", "--org", "acme", "--data-dir", fresh)

    stigmer.ok("apply", "--org", "beta", "-f", "-", input=CODER)
    both = stigmer.ok("export", "agents", "-A")
    mixed = stigmer("import", "--data-dir", str(tmp_path / "other" / "data"), input=both)
    assert mixed.code == 0, mixed
    assert "note: the resources are in orgs 'acme', 'beta', and this CLI acts in org 'local'" in mixed.err

    here = stigmer("import", "--org", "acme", "--data-dir", fresh, input=backup)  # the org it acts in: nothing to say
    assert here.code == 0 and "note:" not in here.err, here
    elsewhere = str(tmp_path / "staging" / "data")
    chosen = stigmer("import", "--to-org", "staging", "--data-dir", elsewhere, input=backup)  # where it went was chosen
    assert chosen.code == 0 and "note:" not in chosen.err, chosen


def test_an_object_json_cannot_write_is_named_and_the_rest_exported(stigmer: Stigmer) -> None:
    """A NaN stored before writes refused them: the backup names that object, writes the
    others, and exits 1 (it used to write nothing at all)."""
    import math

    from stigmer_core import Application
    from stigmer_core.api.agentic.environment.v1 import environment_pb2
    from stigmer_core.kind_client import KindClient
    from tests import workflow_helpers as wf

    with Application.open(stigmer.data_dir) as app:
        env = environment_pb2.Environment()
        env.metadata.name = "prod"
        KindClient(app.channel(), app.registry.kind("Environment")).create(env)
        flows = app.registry.kind("Workflow")
        made: Any = KindClient(app.channel(), flows).create(wf.workflow("odd"))
        made.spec.tasks[0].task_config.update({"x": math.nan})
        app.store.transact(lambda txn: txn.put(flows.object_key(made.metadata.id), made.SerializeToString()))
    result = stigmer("export", "--all")
    assert result.code == 1
    exported = [doc["kind"] for doc in yaml.safe_load_all(result.out) if doc]
    assert "Environment" in exported and "Workflow" not in exported
    assert f"not exported: Workflow local/odd ({made.metadata.id})" in result.err


def _json_file(tmp_path: Path, name: str, *documents: dict[str, Any]) -> str:
    """Documents as a JSON stream file: JSON spells any character as an escape, which YAML input cannot."""
    import json

    path = tmp_path / name
    path.write_text("\n".join(json.dumps(d) for d in documents), encoding="utf-8")
    return str(path)


def test_text_holding_what_yaml_reads_as_a_line_break_comes_back_as_it_was(stigmer: Stigmer, tmp_path: Path) -> None:
    """NEL (U+0085, what '…' becomes when cp1252 text is read as latin-1), U+2028 and U+2029 were
    written raw and read back as newlines: the restored text differed from the stored one."""
    odd = "line1\nline2\x85tail \u2028 and \u2029 end"
    agent = {"kind": "Agent", "metadata": {"name": "Odd"}, "spec": {"instructions": odd, "description": "a\x85b"}}
    stigmer.ok("apply", "-f", _json_file(tmp_path, "odd.json", agent))
    first = stigmer.ok("export", "--all")
    restored = str(tmp_path / "restored" / "data")
    stigmer.ok("import", "--data-dir", restored, input=first)
    assert stigmer.ok("export", "--all", "--data-dir", restored) == first
    (back,) = [d for d in yaml.safe_load_all(stigmer.ok("get", "agents", "odd", "-o", "yaml", "--data-dir", restored))]
    assert back["spec"]["instructions"] == odd and back["spec"]["description"] == "a\x85b"


def test_an_export_cut_short_is_refused_and_nothing_is_imported(stigmer: Stigmer, tmp_path: Path) -> None:
    stigmer.ok("apply", "-f", str(write(tmp_path / "all.yaml", INSTANCE, SUPPORT, CODER)))
    whole = stigmer.ok("export", "--all")
    assert whole.startswith("# stigmer export: 5 objects") and whole.endswith("# end of stigmer export: 5 objects\n")
    target = ("--data-dir", str(tmp_path / "target" / "data"))
    lines = whole.splitlines(keepends=True)
    for cut in ("".join(lines[: len(lines) // 2]), whole.removesuffix("# end of stigmer export: 5 objects\n")):
        message = stigmer.fails("import", *target, input=cut)
        assert message.startswith("<stdin>: cut short: the export says it holds 5 objects"), message
        assert "nothing was imported" in message
    # a document after the end line: not cut short, and the line is there (it said it had no such line)
    message = stigmer.fails("import", *target, input=whole + "---\n" + CODER)
    assert "but it goes on after that line (text added to its end, or two files joined)" in message, message
    assert stored_nothing(stigmer, *target)
    # a whole export, and documents a person wrote (no such lines), import as before
    assert stigmer.ok("import", *target, input=whole).strip() == "imported 5 of 5 resources (5 created)"
    assert stigmer.ok("import", *target, input=CODER).strip() == "imported 1 of 1 resources (1 unchanged)"


def test_a_key_given_twice_in_a_document_is_refused(stigmer: Stigmer, tmp_path: Path) -> None:
    """PyYAML keeps the last of two ``spec:`` keys: the first one's fields were dropped without a word."""
    twice = "kind: Agent\nmetadata: {name: Twice}\nspec: {instructions: first}\nspec: {description: second}\n"
    message = stigmer.fails("import", input=twice)
    assert "invalid YAML at line 4, column 1: found the key 'spec' twice" in message, message
    # two keys as written, one as YAML reads them: said so, not as the same key written twice
    for first, second in (("true", "1"), ("no", "0"), ("1", "1.0")):
        alike = f"kind: Agent\nmetadata: {{name: Bot, labels: {{{first}: a, {second}: b}}}}\n"
        message = stigmer.fails("import", input=alike)
        assert f"(written '{first}' and '{second}', which YAML reads as one key: quote them" in message, message
    assert stored_nothing(stigmer)


def test_owners_are_imported_before_what_they_own_whatever_their_kind_or_slug(stigmer: Stigmer, tmp_path: Path) -> None:
    """Documents went by kind, then slug: an agent owned by an agent whose slug sorts later, or by
    a workflow (a kind applied after agents), failed on import until it was run a second time."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.agent.v1 import agent_pb2
    from stigmer_core.kind_client import KindClient
    from tests import workflow_helpers as wf

    with Application.open(stigmer.data_dir) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        flows = KindClient(app.channel(), app.registry.kind("Workflow"))
        main: Any = agents.create(agent_pb2.Agent(metadata={"name": "Zulu main"}))
        sub = agent_pb2.Agent(metadata={"name": "Alpha sub"})
        sub.metadata.owner_references.add(kind="Agent", id=main.metadata.id)
        agents.create(sub)
        flow: Any = flows.create(wf.workflow("Zeta flow"))
        owned = agent_pb2.Agent(metadata={"name": "Beta helper"})
        owned.metadata.owner_references.add(kind="Workflow", id=flow.metadata.id)
        agents.create(owned)
    backup = stigmer.ok("export", "--all")
    target = ("--data-dir", str(tmp_path / "target" / "data"))
    imported = stigmer.ok("import", *target, input=backup)
    assert imported.strip().splitlines()[0] == "imported 8 of 8 resources (8 created)"
    assert stigmer.ok("export", "--all", *target) == backup


def test_an_agent_left_with_unset_secret_headers_is_named_with_its_org(stigmer: Stigmer, tmp_path: Path) -> None:
    agent = (
        "kind: Agent\nmetadata: {name: Bot, org: acme}\nspec:\n  mcpServers:\n"
        "  - {name: gh, url: 'https://mcp.example.com', headers: {Authorization: 'Bearer s3cret'},"
        " secretHeaders: [Authorization]}\n"
    )
    stigmer.ok("apply", "-f", "-", input=agent)
    backup = stigmer.ok("export", "--all")
    assert "s3cret" not in backup
    imported = stigmer.ok("import", "--data-dir", str(tmp_path / "target" / "data"), input=backup)
    assert "agent/bot in org 'acme': secrets now unset: gh/Authorization (apply clear values to set them)" in (
        imported.splitlines()
    ), imported


def _skill_zip(markdown: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", markdown)
        archive.writestr("scripts/run.sh", "echo triage\n")
    return buf.getvalue()


def test_a_skills_zip_is_exported_and_imported_with_the_same_version(stigmer: Stigmer, tmp_path: Path) -> None:
    """The zip lived only in status, which an export leaves out: an import made a skill without it,
    under another version hash, and agents pinning the version pointed at nothing."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient

    markdown = "---\nname: triage-notes\n---\nHow to triage.\n"
    data = _skill_zip(markdown)
    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        pushed: Any = skills.call("push", skill_pb2.PushSkillRequest(skill_md=markdown, artifact=data, tag="v1"))
    assert pushed.status.artifact.sha256
    backup = stigmer.ok("export", "--all")
    (document,) = [d for d in yaml.safe_load_all(backup) if d]
    assert "artifact" in document["spec"] and "status" not in document
    daemon = stigmer.start().address  # over the network the kinds come by reflection: the same backup
    assert stigmer.ok("export", "--all", "--backend", "remote", "--endpoint", daemon) == backup

    restored = tmp_path / "restored" / "data"
    assert stigmer.ok("import", "--data-dir", str(restored), input=backup).strip() == (
        "imported 1 of 1 resources (1 created)"
    )
    with Application.open(restored) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        (back,) = list(skills.list_all())
        assert back.status.version_hash == pushed.status.version_hash  # type: ignore[attr-defined]
        assert back.status.artifact == pushed.status.artifact  # type: ignore[attr-defined]
        assert not back.spec.artifact  # type: ignore[attr-defined]  # kept with the versions, not in the object
        key = back.status.artifact_storage_key  # type: ignore[attr-defined]
        got = skills.call("getArtifact", skill_pb2.GetArtifactRequest(artifact_storage_key=key))
        assert got.artifact == data  # type: ignore[attr-defined]
    again = stigmer.ok("import", "--data-dir", str(restored), input=backup)
    assert again.strip() == "imported 1 of 1 resources (1 unchanged)"
    assert stigmer.ok("export", "--all", "--data-dir", str(restored)) == backup


def test_a_documents_zip_must_agree_with_its_markdown(stigmer: Stigmer, tmp_path: Path) -> None:
    import base64

    data = base64.b64encode(_skill_zip("Another text.\n")).decode()
    skill = f"kind: Skill\nmetadata: {{name: Notes}}\nspec: {{skillMd: 'How to triage.', artifact: '{data}'}}\n"
    message = stigmer.fails("apply", "-f", "-", input=skill)
    assert "spec.artifact: holds a SKILL.md that differs from spec.skill_md" in message, message
    bad = "kind: Skill\nmetadata: {name: Notes}\nspec: {skillMd: 'How to triage.', artifact: 'bm90IGEgemlw'}\n"
    assert "spec.artifact: is not a readable zip" in stigmer.fails("apply", "-f", "-", input=bad)


def test_a_document_is_refused_where_it_contradicts_the_command_or_its_kind(stigmer: Stigmer) -> None:
    """A foreign apiVersion was rewritten, `--org acme` put a document naming org local into local,
    and a label key YAML read as a number failed in Python's words."""
    elsewhere = "apiVersion: bogus.example.com/v9\nkind: Agent\nmetadata: {name: Bot}\nspec: {}\n"
    message = stigmer.fails("import", input=elsewhere)
    assert "apiVersion 'bogus.example.com/v9' is not Agent's (it is 'agentic.stigmer.ai/v1')" in message, message
    local = "kind: Agent\nmetadata: {name: Bot, org: local}\nspec: {}\n"
    message = stigmer.fails("import", "--org", "acme", input=local)
    assert "metadata.org is 'local', not 'acme' as --org says" in message, message
    assert "to import it into org 'acme', give --to-org acme instead" in message, message  # what was meant
    message = stigmer.fails("apply", "-f", "-", "--org", "acme", input=local)
    assert "as --org says" in message and "--to-org" not in message, message  # apply has no --to-org
    numbered = "kind: Agent\nmetadata: {name: Bot, labels: {1: a}}\nspec: {}\n"
    message = stigmer.fails("apply", "-f", "-", input=numbered)
    assert "metadata.labels: keys are strings: 1 is a number (quote it)" in message, message
    # a value YAML read as a number, a boolean or null: protobuf said "expected string or bytes-like
    # object, got 'int'", naming neither the label nor what to do
    for value, said in (("1", "a number (1)"), ("yes", "a boolean (true)"), ("on", "a boolean (true)"), ("~", "null")):
        valued = f"kind: Agent\nmetadata: {{name: Bot, labels: {{tier: {value}}}}}\nspec: {{}}\n"
        message = stigmer.fails("apply", "-f", "-", input=valued)
        assert f"metadata.labels['tier']: expected a string, got {said} (quote it)" in message, message
    flag = "kind: Agent\nmetadata: {name: Bot, labels: {on: a}}\nspec: {}\n"
    assert "keys are strings: true is a boolean (quote it)" in stigmer.fails("apply", "-f", "-", input=flag)
    assert stored_nothing(stigmer)
    # what agrees goes through: the kind's own apiVersion, --org naming the document's org
    stigmer.ok("import", "--org", "local", input=local.replace("kind:", "apiVersion: agentic.stigmer.ai/v1\nkind:"))


PROD = (
    "kind: Environment\nmetadata: {name: prod}\nspec:\n  data:\n"
    "    API_KEY: {value: s3cret, isSecret: true}\n    REGION: {value: eu}\n"
)


def _files(data_dir: Path) -> dict[str, bytes]:
    """Every file of the data directory but LMDB's lock file (its reader table is not the store)."""
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name != "lock.mdb"}


def _key_of(stigmer: Stigmer) -> str:
    """How messages name the key in the data directory's key file."""
    return fingerprint((stigmer.data_dir / "secret.key").read_bytes())[:8].hex()


def _exported_without_its_key(stigmer: Stigmer, problem: str) -> str:
    """Export the store whose key is gone or another: the export, checked."""
    before = _files(stigmer.data_dir)
    result = stigmer("export", "--all")
    assert result.code == 0, result.err
    (prod,) = yaml.safe_load_all(result.out)
    assert prod["metadata"]["name"] == "prod"
    assert prod["spec"]["data"] == {"API_KEY": {"isSecret": True, "value": "<redacted>"}, "REGION": {"value": "eu"}}
    warning, summary = result.err.strip().splitlines()
    assert warning == (
        f"stigmer: {problem}: exporting without secret values (an export never holds them); import the export "
        "into a fresh data directory and apply the secrets again, or restore the key"
    ), warning
    assert summary == "exported 1 object of 7 kinds from every org"
    assert _files(stigmer.data_dir) == before, "the export wrote nothing in the data directory"
    return result.out


def test_a_store_whose_key_is_lost_is_exported_without_its_secrets(stigmer: Stigmer) -> None:
    """Its key file gone, the store refused to open: the export failed, and with it the one way
    to rescue everything that is not secret."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    sealed_with = _key_of(stigmer)
    (stigmer.data_dir / "secret.key").unlink()
    stigmer.data_dir.chmod(0o750)  # as a restore may leave it: a rescue read leaves modes alone too
    _exported_without_its_key(
        stigmer,
        f"the key file {stigmer.data_dir / 'secret.key'} is missing, but the store holds secrets sealed with key {sealed_with}",
    )
    assert not (stigmer.data_dir / "secret.key").exists()
    assert stat.S_IMODE(stigmer.data_dir.stat().st_mode) == 0o750


def test_an_export_names_what_a_rule_tightened_since_would_refuse_on_import(stigmer: Stigmer) -> None:
    """An agent stored before MCP header values were held to one line exported without a word;
    the import of that backup then refused it, and everything that named it."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.agent.v1 import agent_pb2
    from stigmer_core.kind_client import KindClient

    with Application.open(stigmer.data_dir) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        made: Any = agents.create(agent_pb2.Agent(metadata={"name": "old"}))
        made.spec.mcp_servers.add(name="git", url="https://mcp.example.com").headers["X-Trace"] = "on\r\nX-Admin: yes"
        kind = app.registry.kind("Agent")
        app.store.transact(lambda txn: txn.put(kind.object_key(made.metadata.id), made.SerializeToString()))
        agents.create(agent_pb2.Agent(metadata={"name": "fine"}))
    result = stigmer("export", "agents")
    assert result.code == 0, result.err
    notes = [line for line in result.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, result.err
    assert "Agent local/old" in notes[0] and 'spec.mcp_servers[0].headers["X-Trace"]' in notes[0], notes[0]
    assert "an import refuses it until it is fixed" in notes[0]


def test_a_rotation_left_staged_is_not_discarded_by_the_rescue_export(stigmer: Stigmer) -> None:
    """A rotation's staged key (secret.key.new) not matching the store, with the key file lost: the
    export's first try opened the store to write and discarded it, though it may be the only copy
    of a key some run keys are wrapped by; the store was refused all the same."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    sealed_with = _key_of(stigmer)
    (stigmer.data_dir / "secret.key").unlink()
    staged = stigmer.data_dir / "secret.key.new"
    staged.write_bytes(b"s" * 32)
    _exported_without_its_key(
        stigmer,
        f"the key file {stigmer.data_dir / 'secret.key'} is missing, but the store holds secrets sealed with key {sealed_with}",
    )
    assert staged.read_bytes() == b"s" * 32
    stigmer.fails("apply", "-f", "-", input=PROD)  # a start that is refused leaves it too
    assert staged.read_bytes() == b"s" * 32


def test_a_store_given_another_key_is_exported_without_its_secrets(stigmer: Stigmer) -> None:
    stigmer.ok("apply", "-f", "-", input=PROD)
    sealed_with = _key_of(stigmer)
    (stigmer.data_dir / "secret.key").write_bytes(b"k" * 32)
    other = _key_of(stigmer)
    _exported_without_its_key(
        stigmer,
        f"the key file {stigmer.data_dir / 'secret.key'} is key {other}, but the store's secrets are sealed with key {sealed_with}",
    )
    assert (stigmer.data_dir / "secret.key").read_bytes() == b"k" * 32


def test_a_store_whose_key_is_lost_moves_to_a_fresh_data_directory(stigmer: Stigmer, tmp_path: Path) -> None:
    """Export with the key lost, import into a fresh data directory: the environment is there,
    its secret unset until it is applied again, and the new store works (a new key)."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    sealed_with = _key_of(stigmer)
    (stigmer.data_dir / "secret.key").unlink()
    exported = _exported_without_its_key(
        stigmer,
        f"the key file {stigmer.data_dir / 'secret.key'} is missing, but the store holds secrets sealed with key {sealed_with}",
    )
    fresh = str(tmp_path / "fresh" / "data")
    imported = stigmer.ok("import", "--data-dir", fresh, input=exported)
    assert "environment/prod in org 'local': secrets now unset: API_KEY" in imported, imported
    again = stigmer.ok("import", "--data-dir", fresh, input=exported)  # unchanged: not unset by this import
    assert "environment/prod in org 'local': secrets still unset: API_KEY" in again, again
    restored = yaml.safe_load(stigmer.ok("get", "environment", "prod", "-o", "yaml", "--data-dir", fresh))
    assert restored["status"]["unsetSecrets"] == ["API_KEY"]
    assert restored["spec"]["data"]["REGION"] == {"value": "eu"}
    stigmer.ok("apply", "--data-dir", fresh, "-f", "-", input=PROD)
    again = yaml.safe_load(stigmer.ok("get", "environment", "prod", "-o", "yaml", "--data-dir", fresh))
    assert not again["status"].get("unsetSecrets")


def test_a_store_that_cannot_be_opened_is_said_once(stigmer: Stigmer) -> None:
    """A store that cannot be opened at all (its data file truncated) was said once per kind."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    (stigmer.data_dir / "data.mdb").write_bytes(b"")
    result = stigmer("export", "--all")
    assert result.code == 1 and result.out == ""
    (line,) = result.err.strip().splitlines()
    assert line.startswith(f"stigmer: {stigmer.data_dir / 'data.mdb'} is empty (0 bytes), not a store"), line


def test_a_store_whose_key_is_lost_is_read_but_never_written(stigmer: Stigmer) -> None:
    """get and list show it read-only (said once); apply, a dry run, delete and the daemon still
    refuse with the message they always gave, and nothing in the data directory changes."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    sealed_with = _key_of(stigmer)
    (stigmer.data_dir / "secret.key").unlink()
    before = _files(stigmer.data_dir)
    missing = f"the key file {stigmer.data_dir / 'secret.key'} is missing, but the store holds secrets sealed with key {sealed_with}"
    for command in (("get", "environment", "prod", "-o", "yaml"), ("list", "environments", "-o", "yaml")):
        result = stigmer(*command)
        assert result.code == 0, result.err
        (warning,) = result.err.strip().splitlines()
        assert warning.startswith(f"stigmer: {missing}: showing the store read-only"), warning
        assert "<redacted>" in result.out and "s3cret" not in result.out and "eu" in result.out
    refusal = (
        f"{missing}; restore that key file (or point $STIGMER_SECRET_KEY_FILE or $STIGMER_SECRET_KEY at it). "
        "Starting with a new key would leave every secret unreadable, so the store is not opened."
    )
    dev = "kind: Environment\nmetadata: {name: dev}\nspec:\n  data:\n    REGION: {value: us}\n"
    assert stigmer.fails("apply", "-f", "-", input=dev) == refusal
    assert stigmer.fails("apply", "--dry-run", "-f", "-", input=dev) == refusal
    assert stigmer.fails("delete", "environment", "prod") == refusal
    assert _files(stigmer.data_dir) == before
    started = stigmer.fails("local", "start", "--address", "127.0.0.1:0")
    assert f"exited with code 1 while starting: {refusal.removesuffix('.')}; see " in started, started
    assert refusal in (stigmer.home / "daemon.log").read_text()
    assert not (stigmer.data_dir / "secret.key").exists()


def test_an_import_cut_off_from_its_server_says_how_far_it_got(
    stigmer: Stigmer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon stopped after the first document: the error named the server, not how far the
    import got or that running it again finishes it."""
    from click.testing import CliRunner

    from stigmer_core.cli import applying
    from stigmer_core.cli.app import main

    daemon = stigmer.start().address
    backup = write(tmp_path / "backup.yaml", SUPPORT, CODER)
    real = applying.apply_one
    applied: list[str] = []

    def apply_then_stop(*args: Any, **kwargs: Any) -> Any:
        if applied:
            stigmer.ok("local", "stop")
        applied.append("one")
        return real(*args, **kwargs)

    monkeypatch.setattr(applying, "apply_one", apply_then_stop)
    result = CliRunner().invoke(
        main, ["import", "-f", str(backup), "--backend", "remote", "--endpoint", daemon], env=stigmer.env()
    )
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        "1 of 2 resources were imported before it, and importing the same documents again finishes the job "
        "(what is there already is unchanged)"
    ), result.output


def test_an_import_whose_server_does_not_answer_in_time_stops_there(
    stigmer: Stigmer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stops answering (a locked database) made every document wait out its own
    deadline, one after another, and lost 'importing again finishes the job'."""
    from click.testing import CliRunner

    from stigmer_core.cli import applying
    from stigmer_core.cli.app import main

    daemon = stigmer.start().address
    backup = write(tmp_path / "backup.yaml", SUPPORT, CODER)
    from stigmer_core.cli.calls import KindCalls
    from stigmer_core.cli.session import Session

    real = applying.apply_one
    tried: list[str] = []

    def counted(session: Any, doc: Any, **kwargs: Any) -> Any:
        tried.append(doc.kind.name)
        return real(session, doc, **kwargs)

    def too_late(session: Session, kind: Any) -> KindCalls:  # a real deadline, passed at once
        return KindCalls(session.client.channel, kind, target=session.target, timeout=1e-6)

    monkeypatch.setattr(applying, "apply_one", counted)
    monkeypatch.setattr(Session, "calls", too_late)
    result = CliRunner().invoke(
        main, ["import", "-f", str(backup), "--backend", "remote", "--endpoint", daemon], env=stigmer.env()
    )
    assert result.exit_code == 1
    assert len(tried) == 1, result.output
    assert "did not answer in time" in result.output and "finishes the job" in result.output, result.output


def test_an_import_the_server_refuses_to_take_from_this_caller_stops_at_once(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """Without a token, or with a bad one, every document was refused in turn: one identical
    line per document, then `imported 0 of N`."""
    admin = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "first").strip()
    viewer = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "ro").strip()
    stranger = stigmer.ok("token", "create", "--org", "beta", "--role", "admin", "--name", "other org").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    agents = [CODER.replace("Coder", f"Agent {n}") for n in range(12)]
    backup = write(tmp_path / "backup.yaml", *agents)
    remote = ("import", "-f", str(backup), "--org", "acme", "--backend", "remote", "--endpoint", daemon)
    cases = {
        "": "this server requires an API token",
        "stg_" + "z" * 43: "the API token is not valid",
        viewer: "(this caller may write nothing in org 'acme'); import stopped: 0 of 12",
        stranger: "org 'acme' not found (this caller may write nothing in org 'acme'); import stopped: 0 of 12",
    }
    for token, words in cases.items():
        result = stigmer(*remote, env={"STIGMER_TOKEN": token})
        assert result.code == 1, result.err
        said = result.err.strip().splitlines()
        assert len(said) == 1 and words in said[0] and "import stopped" in said[0], result.err
        assert "imported 0 of" not in result.out, result.out
    imported = stigmer(*remote, env={"STIGMER_TOKEN": admin})
    assert imported.code == 0 and "imported 12 of 12 resources" in imported.out, imported.err


def test_a_local_export_imported_without_to_org_is_told_to_give_it(stigmer: Stigmer, tmp_path: Path) -> None:
    """After `login` the CLI acts in the token's org, and a local export names org 'local': the
    import stopped at "org 'local' not found" without saying that `--to-org` moves it."""
    admin = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "first").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    # as `login` leaves it: the token's org is the CLI's
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}, "org": "acme"}))
    backup = write(tmp_path / "backup.yaml", CODER.replace("metadata:\n", "metadata:\n  org: local\n"))
    remote = ("-f", str(backup), "--backend", "remote", "--endpoint", daemon)
    refused = stigmer("import", *remote, env={"STIGMER_TOKEN": admin})
    assert refused.code == 1, refused.err
    assert "org 'local' not found (this caller may write nothing in org 'local'); to import them into org " in (
        refused.err
    ), refused.err
    assert "'acme', give --to-org acme; import stopped: 0 of 1" in refused.err, refused.err
    moved = stigmer("import", *remote, "--to-org", "acme", env={"STIGMER_TOKEN": admin})
    assert moved.code == 0 and "imported 1 of 1 resources (1 created)" in moved.out, moved.err


def test_a_local_export_moves_into_a_team_servers_org(stigmer: Stigmer, tmp_path: Path) -> None:
    """A local export names org 'local' in every document; `import --org acme` refused it, and
    nothing else could put it in the team's org."""
    from .test_manifests import MANIFESTS

    laptop = str(tmp_path / "laptop")
    stigmer.ok("apply", "-f", str(MANIFESTS / "all.yaml"), "--data-dir", laptop)
    backup = write(tmp_path / "backup.yaml", stigmer.ok("export", "--all", "--data-dir", laptop))
    assert {d["metadata"]["org"] for d in yaml.safe_load_all(backup.read_text())} == {"local"}

    admin = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "first").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    remote = ("--backend", "remote", "--endpoint", daemon)
    token = {"STIGMER_TOKEN": admin}
    refused = stigmer("import", "-f", str(backup), "--org", "acme", *remote, env=token)
    assert "metadata.org is 'local', not 'acme' as --org says" in refused.err, refused.err
    assert stigmer("import", "-f", str(backup), "--to-org", "Acme!", *remote, env=token).code == 2
    disagree = stigmer("import", "-f", str(backup), "--org", "local", "--to-org", "acme", *remote, env=token)
    assert disagree.code == 2 and "disagree" in disagree.err, disagree.err

    moved = stigmer("import", "-f", str(backup), "--to-org", "acme", *remote, env=token)
    assert moved.code == 0, moved.err
    count = len(list(yaml.safe_load_all(backup.read_text())))
    assert f"imported {count} of {count} resources" in moved.out, moved.out
    agent = yaml.safe_load(stigmer("get", "agent", "support-bot", "--org", "acme", "-o", "yaml", *remote, env=token).out)
    assert agent["metadata"]["org"] == "acme" and agent["status"]["defaultInstanceId"]
    again = stigmer("import", "-f", str(backup), "--to-org", "acme", *remote, env=token)
    assert again.code == 0 and "created" not in again.out, again.out


NAMING_ITS_ORG = """\
kind: Skill
metadata: {name: Triage Notes}
spec: {skillMd: "# Triage", tag: stable}
---
kind: Environment
metadata: {name: Prod}
spec:
  data:
    REGION: {value: eu}
---
kind: Agent
metadata: {name: Support Bot}
spec:
  instructions: Be helpful.
  skillRefs: [{org: local, slug: triage-notes, version: stable}]
  environmentRefs: [{org: local, kind: Environment, slug: prod}]
"""


def test_a_move_takes_the_references_naming_the_documents_org_along(stigmer: Stigmer, tmp_path: Path) -> None:
    """`--to-org` rewrote metadata.org only: an agent whose references name their org kept
    org 'local' in them, was refused in the new org ('names an environment of another org'),
    and its instance stayed behind with it."""
    laptop = str(tmp_path / "laptop")
    stigmer.ok("apply", "-f", "-", "--data-dir", laptop, input=NAMING_ITS_ORG)
    backup = stigmer.ok("export", "--all", "--data-dir", laptop)
    team = str(tmp_path / "team")
    moved = stigmer.ok("import", "--to-org", "acme", "--data-dir", team, input=backup)
    assert "imported 4 of 4 resources" in moved, moved
    agent = yaml.safe_load(stigmer.ok("get", "agent", "support-bot", "--org", "acme", "-o", "yaml", "--data-dir", team))
    assert agent["spec"]["environmentRefs"] == [{"org": "acme", "kind": "Environment", "slug": "prod"}]
    assert agent["spec"]["skillRefs"] == [{"org": "acme", "slug": "triage-notes", "version": "stable"}]
    instance = yaml.safe_load(
        stigmer.ok("get", "agentinstance", "support-bot-default", "--org", "acme", "-o", "yaml", "--data-dir", team)
    )
    assert instance["metadata"]["org"] == "acme"


def test_a_move_of_documents_of_several_orgs_is_refused_before_anything_is_written(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """`--to-org` merged every org of an export into one without a word: clashing slugs failed,
    the others landed, and references by slug found the other org's objects."""
    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.ok("apply", "-f", "-", "--org", "team", input=CODER)
    stigmer.ok("apply", "-f", "-", "--org", "team", input=PROD)
    backup = stigmer.ok("export", "--all")
    fresh = str(tmp_path / "fresh")
    refused = stigmer.fails("import", "--to-org", "acme", "--data-dir", fresh, input=backup)
    assert refused == (
        "--to-org acme moves the objects of one org, but the documents name 2 orgs ('local', 'team'); nothing "
        "was imported (export one org, `stigmer export --all --org local > local.yaml`, and import that)"
    )
    assert stored_nothing(stigmer, "--data-dir", fresh)
    one = stigmer.ok("export", "--all", "--org", "team")
    assert "imported 3 of 3 resources" in stigmer.ok("import", "--to-org", "acme", "--data-dir", fresh, input=one)


def test_an_import_whose_local_daemon_stopped_says_so_of_the_local_daemon(
    stigmer: Stigmer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local daemon stopped after the first document: the error spoke of a server and sent a
    local user to `stigmer backend status --backend remote`."""
    from click.testing import CliRunner

    from stigmer_core.cli import applying
    from stigmer_core.cli.app import main

    elsewhere = tmp_path / "elsewhere"
    daemon = stigmer.start(data_dir=elsewhere).address
    backup = write(tmp_path / "backup.yaml", SUPPORT, CODER)
    real = applying.apply_one
    applied: list[str] = []

    def apply_then_stop(*args: Any, **kwargs: Any) -> Any:
        if applied:
            stigmer.ok("local", "stop", "--data-dir", str(elsewhere))
        applied.append("one")
        return real(*args, **kwargs)

    monkeypatch.setattr(applying, "apply_one", apply_then_stop)
    result = CliRunner().invoke(main, ["import", "-f", str(backup), "--data-dir", str(elsewhere)], env=stigmer.env())
    assert result.exit_code == 1
    said = result.output.strip().splitlines()[-1]
    assert said == (
        f"stigmer: cannot reach the local stigmer daemon of data directory {elsewhere} at {daemon} (did the daemon "
        f"stop? `stigmer local status --data-dir {elsewhere}` checks it, `stigmer local start --data-dir {elsewhere}` "
        "starts it again; with none running, commands open the store themselves); 1 of 2 resources were imported "
        "before it, and importing the same documents again finishes the job (what is there already is unchanged)"
    ), result.output
    assert "--backend remote" not in result.output


def _interrupted(stigmer: Stigmer, command: str, backup: Path) -> tuple[int, str]:
    """``command -f backup`` on the local store in process, sent SIGINT a second into its documents:
    its exit code and stderr."""
    import signal
    import subprocess
    import sys
    import time

    running = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", command, "-f", str(backup)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stigmer.env(),
    )
    deadline = time.monotonic() + 60
    while not (stigmer.data_dir / "data.mdb").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the documents: its start takes well under this, the whole run several times it
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=60)
    return running.returncode, err


def test_an_apply_interrupted_says_how_far_it_got(stigmer: Stigmer, tmp_path: Path) -> None:
    """Ctrl-C in `apply` printed click's "Aborted!" alone, exit 1, as `import` did."""
    count = 3000
    manifest = write(tmp_path / "many.yaml", *(CODER.replace("Coder", f"Agent {n}") for n in range(count)))
    code, err = _interrupted(stigmer, "apply", manifest)
    said = err.strip().splitlines()[-1]
    assert code == 130 and said.startswith("stigmer: interrupted after ") and f" of {count} documents" in said, err
    assert "applying the same files again finishes the job" in said and "Aborted!" not in err, err


def test_an_import_interrupted_says_how_far_it_got_and_a_second_run_finishes(stigmer: Stigmer, tmp_path: Path) -> None:
    """Ctrl-C printed click's "Aborted!" alone: nothing said how far the import got, or that
    importing again finishes it."""
    count = 3000
    backup = write(tmp_path / "backup.yaml", *(CODER.replace("Coder", f"Agent {n}") for n in range(count)))
    code, err = _interrupted(stigmer, "import", backup)
    assert code == 130, (code, err)
    said = err.strip().splitlines()[-1]
    assert said.startswith("stigmer: interrupted; ") and f" of {count} resources were imported before it" in said, err
    assert "importing the same documents again finishes the job" in said and "Aborted!" not in err, err
    again = stigmer("import", "-f", str(backup))
    assert again.code == 0 and f"imported {count} of {count} resources" in again.out, again.err


def test_a_document_naming_one_that_failed_is_said_to_follow_it(stigmer: Stigmer) -> None:
    """An instance whose agent was refused was told `agent '…' not found (spec.agent_id)`, as if its
    agent were missing from the backup."""
    from stigmer_core.ids import new_id

    agent_id, instance_id = new_id("agt"), new_id("ain")
    backup = (
        f"kind: Agent\nmetadata: {{name: Broken, slug: Not_A_Slug, id: {agent_id}}}\nspec: {{}}\n---\n"
        f"kind: AgentInstance\nmetadata: {{name: Its instance, id: {instance_id}}}\nspec: {{agentId: {agent_id}}}\n"
    )
    result = stigmer("import", input=backup)
    assert result.code == 1
    assert "metadata.slug: does not match regex pattern" in result.err, result.err
    assert "(agentinstance/its-instance): " in result.err and (
        "not found in org 'local' (spec.agent_id) (it names agent/Not_A_Slug (<stdin>, document 1), which failed above)"
        in result.err
    ), result.err
    assert stored_nothing(stigmer)


def test_an_object_owned_by_a_kind_never_exported_imports_without_that_owner_elsewhere(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """An environment an admin's token owns (docs/security.md) was exported with its owner
    reference, and no store without that token could import it: NOT_FOUND on
    metadata.owner_references[0]. The export now says so, and an import into such a store takes
    it without that owner, saying so; where the owner is, it is kept."""
    import json

    stigmer.ok("token", "create", "--role", "admin", "--name", "owner-tok")
    (token,) = json.loads(stigmer.ok("get", "apitokens", "-o", "json"))
    owned = (
        "kind: Environment\nmetadata:\n  name: cleanup-me\n"
        f"  ownerReferences: [{{kind: ApiToken, id: {token['metadata']['id']}}}]\nspec: {{}}\n"
    )
    stigmer.ok("apply", "-f", "-", input=owned)
    exported = stigmer("export", "--all")
    assert exported.code == 0, exported.err
    assert f"owned by ApiToken {token['metadata']['id']}, of a kind no export carries" in exported.err
    assert "(1 unchanged)" in stigmer.ok("import", input=exported.out)  # its owner is here: kept
    elsewhere = ("--data-dir", str(tmp_path / "elsewhere" / "data"))
    imported = stigmer("import", *elsewhere, input=exported.out)
    assert imported.code == 0, imported.err
    assert "imported 1 of 1 resources (1 created)" in imported.out
    assert "imported without its owner ApiToken" in imported.err and "cleanup-me" in imported.err
    (moved,) = json.loads(stigmer.ok("get", "environments", "-o", "json", *elsewhere))
    assert "ownerReferences" not in moved["metadata"]
    assert "(1 unchanged)" in stigmer.ok("import", *elsewhere, input=exported.out)


def test_an_export_of_an_org_the_store_does_not_hold_is_refused_not_written_empty(stigmer: Stigmer) -> None:
    """A mistyped --org made an empty backup, exit 0, that imported as if whole; a server refuses
    an org it does not know."""
    stigmer.ok("apply", "-f", "-", input="kind: Agent\nmetadata: {name: Bot}\nspec: {}\n")
    result = stigmer("export", "--all", "--org", "lcoal")
    assert result.code == 1, result.err
    assert "org 'lcoal' holds nothing in this store" in result.err and "orgs here: 'local'" in result.err, result.err
    assert "-A for every org" in result.err, result.err
    assert "exported 2 objects" in stigmer("export", "--all", "--org", "local").err  # the agent and its instance
