"""``export`` and ``import``: a backup restores to the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .conftest import Stigmer, write
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
