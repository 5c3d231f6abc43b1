"""Backups of a store holding every first-party kind, through the real command.

The store holds two agents (one with an extra instance), an environment with
a secret and a plain value, a skill with two versions and a tag, sessions on
an agent's default instance, a workflow with an extra instance, and an agent
and a workflow execution (with their contexts), which a backup must leave out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import yaml

from stigmer_core.ids import derived_id, new_id

from .conftest import Stigmer, write

# '-' is not in the base64 alphabet, so no ciphertext can contain these by chance.
SECRET = "sk-live-Clear-4242"
RUNTIME_SECRET = "rt-Clear-Token-77"
REDACTED = "<redacted>"

EXPORTED_KINDS = ("Environment", "Skill", "Agent", "AgentInstance", "Workflow", "Session", "WorkflowInstance")
RUN_TIME_KINDS = ("AgentExecution", "WorkflowExecution", "ExecutionContext")


@attrs.frozen
class Ids:
    agent: str
    workflow: str

    @property
    def default_instance(self) -> str:
        return derived_id("ain", self.agent, "default")

    @property
    def default_workflow_instance(self) -> str:
        return derived_id("wfi", self.workflow, "default")


def _documents(ids: Ids) -> str:
    return f"""\
kind: Environment
metadata: {{name: Prod}}
spec:
  description: production values
  data:
    API_KEY: {{value: {SECRET}, isSecret: true, description: the key}}
    REGION: {{value: eu-west-1}}
---
kind: Skill
metadata: {{name: Triage Notes, labels: {{team: support}}}}
spec:
  skillMd: "# Triage\\nversion one\\n"
  tag: stable
---
kind: Agent
metadata: {{id: {ids.agent}, name: Support Bot, tags: [support]}}
spec:
  instructions: Be brief.
  skillRefs: [{{slug: triage-notes}}]
  environmentRefs: [{{slug: prod}}]
---
kind: Agent
metadata: {{name: Coder}}
spec: {{mcpServers: [{{name: git, command: git-mcp}}]}}
---
kind: AgentInstance
metadata: {{name: Support Bot EU, labels: {{region: eu}}}}
spec: {{agentId: {ids.agent}, description: EU deployment, environmentRefs: [{{slug: prod}}]}}
---
kind: Session
metadata: {{name: First Chat, tags: [vip]}}
spec: {{agentInstanceId: {ids.default_instance}, subject: hello, metadata: {{channel: web}}}}
---
kind: Workflow
metadata: {{id: {ids.workflow}, name: Triage}}
spec:
  description: routes tickets
  document: {{dsl: 1.0.0, namespace: support, name: triage, version: 0.1.0}}
  tasks:
    - {{name: fetch, kind: call, taskConfig: {{call: http}}, flow: {{then: route}}}}
    - {{name: route, kind: set, taskConfig: {{value: route}}, flow: {{then: end}}}}
---
kind: WorkflowInstance
metadata: {{name: Triage Staging}}
spec: {{workflowId: {ids.workflow}, environmentRefs: [{{slug: prod}}]}}
"""


SKILL_V2 = """\
kind: Skill
metadata: {name: Triage Notes, labels: {team: support}}
spec:
  skillMd: "# Triage\\nversion two\\n"
  tag: v2
"""


def _executions(ids: Ids) -> str:
    return f"""\
kind: AgentExecution
metadata: {{name: Run One}}
spec:
  agentId: {ids.agent}
  message: hi there
  runtimeEnv: {{TOKEN: {{value: {RUNTIME_SECRET}, isSecret: true}}}}
---
kind: WorkflowExecution
metadata: {{name: Flow One}}
spec: {{workflowId: {ids.workflow}, triggerMessage: go}}
"""


def _fill(stigmer: Stigmer, tmp_path: Path) -> Ids:
    ids = Ids(new_id("agt"), new_id("wfl"))
    stigmer.ok("apply", "-f", str(write(tmp_path / "store.yaml", _documents(ids))))
    stigmer.ok("apply", "-f", "-", input=SKILL_V2)
    stigmer.ok("apply", "-f", str(write(tmp_path / "runs.yaml", _executions(ids))))
    for kind in RUN_TIME_KINDS:
        assert _get(stigmer, kind), f"the store holds {kind} objects, so leaving them out is tested"
    return ids


def _get(stigmer: Stigmer, kind: str, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(stigmer.ok("get", kind, "-A", "-o", "json", *args))
    return found


def _snapshot(stigmer: Stigmer, *args: str) -> dict[str, list[dict[str, Any]]]:
    """Every exported object as the server stores it, resource versions and timestamps included."""
    return {kind: _get(stigmer, kind, *args) for kind in EXPORTED_KINDS}


def _versions(snapshot: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    return {o["metadata"]["id"]: o["metadata"]["resourceVersion"] for objects in snapshot.values() for o in objects}


def _assert_no_clear_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and RUNTIME_SECRET not in text


def test_every_kind_round_trips_byte_identical_without_runs_or_secrets(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    ids = _fill(stigmer, tmp_path)
    exported = stigmer("export", "--all", "-A")
    assert exported.code == 0, exported.err
    first = exported.out
    _assert_no_clear_secret(first)
    # the runs left out are named; a kind holding nothing (tokens, here) is not
    assert exported.err.strip().splitlines()[-1] == (
        "note: not exported, by their kinds' declarations (run-time records, credentials): agentexecutions, "
        "executioncontexts, workflowexecutions"
    ), exported.err

    documents = list(yaml.safe_load_all(first))
    assert [(d["kind"], d["metadata"]["slug"]) for d in documents] == [
        ("Environment", "prod"),
        ("Skill", "triage-notes"),
        ("Agent", "coder"),
        ("Agent", "support-bot"),
        ("AgentInstance", "coder-default"),
        ("AgentInstance", "support-bot-default"),
        ("AgentInstance", "support-bot-eu"),
        ("Workflow", "triage"),
        ("Session", "first-chat"),
        ("Session", "run-one"),  # opened by the agent execution, which itself is left out
        ("WorkflowInstance", "triage-default"),
        ("WorkflowInstance", "triage-staging"),
    ]
    for document in documents:
        assert "status" not in document
        assert not {"resourceVersion", "createdAt", "updatedAt", "version"} & set(document["metadata"])
        assert document["metadata"]["id"], "every id is kept, default instances' too"
    by_slug = {d["metadata"]["slug"]: d for d in documents}
    assert by_slug["support-bot-default"]["metadata"]["id"] == ids.default_instance
    assert by_slug["triage-default"]["metadata"]["id"] == ids.default_workflow_instance
    assert {by_slug[s]["spec"]["agentInstanceId"] for s in ("first-chat", "run-one")} == {ids.default_instance}
    assert by_slug["prod"]["spec"]["data"]["API_KEY"] == {"value": REDACTED, "isSecret": True, "description": "the key"}
    assert by_slug["prod"]["spec"]["data"]["REGION"] == {"value": "eu-west-1"}

    for name in ("agentexecutions", "wfx", "execution-context"):
        message = stigmer.fails("export", name)
        assert "is not exportable (its declaration says exported=False)" in message, message
    # a remote server's kinds are matched with the installed plugins' declarations
    remote = ("--backend", "remote", "--endpoint", daemon)
    assert stigmer.ok("export", "--all", "-A", *remote) == first
    assert "is not exportable" in stigmer.fails("export", "agentexecution", *remote)

    # the store it came from already holds all of it, secrets included
    source = _snapshot(stigmer)
    assert stigmer.ok("import", input=first).strip() == "imported 12 of 12 resources (12 unchanged)"
    assert _snapshot(stigmer) == source

    restored = tmp_path / "restored" / "data"
    stigmer.start(data_dir=restored)
    there = ("--data-dir", str(restored))
    imported = stigmer.ok("import", *there, input=first)
    # the three default instances come with their agents and workflow, under the same ids, and count as
    # created (the store was empty); the secret the backup held redacted is named as unset
    assert imported.strip().splitlines() == [
        "imported 12 of 12 resources (12 created)",
        "environment/prod in org 'local': secrets now unset: API_KEY (apply clear values to set them)",
    ]
    second = stigmer.ok("export", "--all", "-A", *there)
    assert second == first

    before = _snapshot(stigmer, *there)
    again = stigmer.ok("import", *there, input=first)
    assert again.strip().splitlines()[0] == "imported 12 of 12 resources (12 unchanged)"
    after = _snapshot(stigmer, *there)
    assert _versions(after) == _versions(before) and after == before
    third = stigmer.ok("export", "--all", "-A", *there)
    assert third == first
    _assert_no_clear_secret(second, third, json.dumps(after))

    # what a restore cannot bring back is visible: the secret is unset until set again
    (environment,) = after["Environment"]
    assert environment["status"]["unsetSecrets"] == ["API_KEY"]
    # the skill's current version is the same content version; its history stays behind
    (original,) = _get(stigmer, "Skill")
    (skill,) = after["Skill"]
    assert original["metadata"]["version"]["previousVersionId"]
    assert skill["metadata"]["version"]["id"] == original["metadata"]["version"]["id"]
    assert skill["status"]["versionHash"] == original["status"]["versionHash"]
    assert skill["metadata"]["version"]["tag"] == "v2"
    for kind in RUN_TIME_KINDS:
        assert _get(stigmer, kind, *there) == []


def test_import_into_a_store_holding_some_of_the_objects_is_idempotent(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    _fill(stigmer, tmp_path)
    backup = stigmer.ok("export", "--all", "-A")
    documents = list(yaml.safe_load_all(backup))

    target = ("--data-dir", str(tmp_path / "target" / "data"))  # no daemon there: in process
    held = [d for d in documents if d["metadata"]["slug"] in {"prod", "triage-notes", "support-bot", "first-chat"}]
    assert len(held) == 4
    partial = stigmer.ok("import", *target, input=yaml.safe_dump_all(held))
    assert partial.strip().splitlines() == [
        "imported 4 of 4 resources (4 created)",
        "environment/prod in org 'local': secrets now unset: API_KEY (apply clear values to set them)",
    ]
    stigmer.ok("apply", *target, "-f", "-", input="kind: Agent\nmetadata: {name: Extra}\nspec: {}\n")
    (support,) = [d for d in held if d["kind"] == "Agent"]
    changed = {**support, "spec": {**support["spec"], "instructions": "Be verbose."}}
    configured = stigmer.ok("apply", *target, "-f", "-", input=yaml.safe_dump(changed))
    assert configured.strip() == "agent/support-bot configured"

    imported = stigmer.ok("import", *target, input=backup)
    # held objects stay as they are (the changed agent is put back), and so does the default instance the
    # held agent made when it was created; those the import's own agent and workflow made count as created
    assert imported.strip().splitlines()[0] == "imported 12 of 12 resources (1 configured, 7 created, 4 unchanged)"
    before = _snapshot(stigmer, *target)
    again = stigmer.ok("import", *target, input=backup)
    assert again.strip().splitlines()[0] == "imported 12 of 12 resources (12 unchanged)"
    after = _snapshot(stigmer, *target)
    assert _versions(after) == _versions(before) and after == before

    assert stigmer.ok("delete", "agent", "extra", *target).strip().splitlines() == [
        "agent/extra deleted",
        "agentinstance/extra-default deleted with it",
    ]
    assert stigmer.ok("export", "--all", "-A", *target) == backup
