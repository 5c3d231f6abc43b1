"""Every example in examples/manifests applies cleanly against a real daemon."""

from __future__ import annotations

from pathlib import Path

import yaml

from .conftest import Stigmer, lines

MANIFESTS = Path(__file__).parents[2] / "examples" / "manifests"
# In the order a person applies them one by one: what a file names comes before it.
FILES = ("skill.yaml", "environment.yaml", "agents.yaml", "workflow.yaml", "session.yaml", "agent-execution.yaml")


def test_every_first_party_kind_has_an_example() -> None:
    present = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert present == {*FILES, "all.yaml"}
    kinds = {d["kind"] for d in yaml.safe_load_all((MANIFESTS / "all.yaml").read_text())}
    assert kinds == {"Skill", "Environment", "Agent", "Workflow", "Session", "AgentExecution"}
    for name in FILES:
        text = (MANIFESTS / name).read_text()
        assert text.startswith("#"), f"{name} opens with a comment saying what it is"


def test_each_file_applies_then_all_at_once(stigmer: Stigmer, daemon: str, tmp_path: Path) -> None:
    for name in FILES:
        out = lines(stigmer.ok("apply", "-f", str(MANIFESTS / name)))
        assert out and all(line.endswith(" created") for line in out), (name, out)
    secret = yaml.safe_load(stigmer.ok("get", "environment", "prod", "-o", "yaml"))["spec"]["data"]["API_KEY"]
    assert secret["isSecret"] is True and secret["value"] != "replace-me-with-the-real-key"

    fresh = str(tmp_path / "fresh" / "data")
    # the dry run of a file a real apply takes: the session names the agent's default instance,
    # which the server makes with the agent, so no document of the run declares it; the agent's dry
    # run names it (stigmer-dry-run-created), so the session is not said to need it made first
    dry = lines(stigmer.ok("apply", "--dry-run", "-f", str(MANIFESTS / "all.yaml"), "--data-dir", fresh))
    assert all(" created (dry run" in line for line in dry) and len(dry) == 6, dry
    assert dry[4] == "session/first-chat created (dry run)", dry
    applied = lines(stigmer.ok("apply", "-f", str(MANIFESTS / "all.yaml"), "--data-dir", fresh))
    assert applied == [
        "environment/prod created",
        "skill/triage-notes created",
        "agent/support-bot created",
        "workflow/triage created",
        "session/first-chat created",
        "agentexecution/first-run created",
    ]
    again = lines(stigmer.ok("apply", "-f", str(MANIFESTS / "all.yaml"), "--data-dir", fresh))
    assert all(line.endswith((" unchanged", " configured")) for line in again), again


def test_the_examples_apply_in_every_org_of_a_shared_server(stigmer: Stigmer, daemon: str) -> None:
    """The examples fixed the agent's id: on a shared server only the first org to apply them
    succeeded, the others got "that id cannot be used there"."""
    for org in ("local", "acme", "globex"):
        applied = lines(stigmer.ok("apply", "-f", str(MANIFESTS / "all.yaml"), "--org", org))
        assert all(line.endswith(" created") for line in applied), (org, applied)
    ids = {stigmer.ok("get", "agent", "support-bot", "--org", org, "-o", "yaml") for org in ("acme", "globex")}
    assert len(ids) == 2
