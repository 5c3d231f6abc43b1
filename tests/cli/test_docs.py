"""The CLI's docs stay true: field names as YAML writes them, and the README's in-process snippet runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager

from .conftest import TIMEOUT

ROOT = Path(__file__).parents[2]
# Written by hand (ExecutionContext is made by the server, never written in YAML).
FIRST_PARTY = (
    "Skill",
    "Environment",
    "Agent",
    "AgentInstance",
    "Workflow",
    "WorkflowInstance",
    "Session",
    "AgentExecution",
    "WorkflowExecution",
)


def test_cli_doc_names_every_spec_field_of_every_first_party_kind() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    rows = {m[1]: m[2] for m in re.finditer(r"^\| (\w+) \| (.+) \|$", text, re.MULTILINE)}
    registry = build_registry(plugin_manager(), default_org="local")
    for name in FIRST_PARTY:
        decl = registry.kind(name).decl
        row = rows.get(decl.name)
        assert row is not None, f"docs/cli.md has no spec row for {decl.name}"
        spec = decl.resource.DESCRIPTOR.fields_by_name["spec"].message_type
        for field in spec.fields:
            assert re.search(rf"`{field.json_name}\b", row), f"{decl.name}: {field.json_name} missing from docs/cli.md"


def test_readme_in_process_snippet_runs_on_its_own(tmp_path: Path) -> None:
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    in_process = next(s for s in snippets if "connect(data_dir=" in s)
    code = in_process.replace('"/tmp/stigmer"', repr(str(tmp_path / "data")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "local-bot"
