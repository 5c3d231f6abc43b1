"""A backup takes every org, and says what it could not take instead of exiting 0 without it."""

from __future__ import annotations

from pathlib import Path

import yaml

from .conftest import Stigmer, lines, write
from .test_resources import CODER
from .test_third_party import NOTE, with_note_kind

__all__ = ["with_note_kind"]  # the fixture, used below


def test_export_all_takes_every_org(stigmer: Stigmer, daemon: str) -> None:
    stigmer.ok("apply", "-f", "-", input=CODER)
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER)
    result = stigmer("export", "--all")
    assert result.code == 0, result.err
    orgs = sorted({d["metadata"]["org"] for d in yaml.safe_load_all(result.out)})
    assert orgs == ["acme", "local"]
    assert "exported 4 objects of " in result.err and "from every org" in result.err
    only = list(yaml.safe_load_all(stigmer.ok("export", "--all", "--org", "acme")))
    assert {d["metadata"]["org"] for d in only} == {"acme"}


def test_stored_objects_of_an_uninstalled_kind_are_named(with_note_kind: Stigmer, tmp_path: Path) -> None:
    cli = with_note_kind
    cli.ok("apply", "-f", str(write(tmp_path / "n.yaml", NOTE, CODER)))  # in process: no daemon
    cli.python_path.clear()  # the note kind's package is uninstalled
    result = cli("export", "--all")
    assert result.code == 1
    assert [d["kind"] for d in yaml.safe_load_all(result.out)] == ["Agent", "AgentInstance"]
    assert (
        "stigmer: not exported: 1 stored object under key prefix 'notes': no installed plugin serves that kind"
        in result.err
    )
    # what it holds is not a whole backup: no last line closes it, and import says why it refuses it
    assert "# end of stigmer export" not in result.out
    refused = cli.fails("import", "--data-dir", str(tmp_path / "restored" / "data"), input=result.out)
    assert refused.startswith("<stdin>: written by an export that failed (not exported: 1 stored object"), refused
    # and the daemon's status tells they are there, kept, though it counts only what it serves
    cli.start()
    status = cli.ok("local", "status")
    assert (
        "1 stored object under key prefix 'notes': no installed plugin serves that kind (reinstall its package "
        "to serve them again)" in status
    ), status


def test_a_kind_the_daemon_cannot_answer_does_not_stop_status_or_export(
    with_note_kind: Stigmer, tmp_path: Path
) -> None:
    cli = with_note_kind
    cli.python_path.clear()
    cli.start()  # the daemon does not have the note kind; this CLI will
    cli.ok("apply", "-f", "-", input=CODER)
    cli.python_path.extend([tmp_path / "site", Path(__file__).parent])

    status = cli("local", "status")
    assert status.code == 0, status.err
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines(status.out) if line.startswith(("agent", "note"))}
    assert rows["agent"] == "1" and rows["agentinstance"] == "1"
    assert rows["note"].startswith("? (cannot count: ")

    export = cli("export", "--all")
    assert export.code == 1
    assert [d["kind"] for d in yaml.safe_load_all(export.out)] == ["Agent", "AgentInstance"]
    assert "stigmer: not exported: kind 'note': " in export.err


def test_a_kind_that_lists_only_within_an_org_is_exported_org_by_org(with_note_kind: Stigmer, tmp_path: Path) -> None:
    cli = with_note_kind
    entry_points = tmp_path / "site" / "note_kind-0.1.dist-info" / "entry_points.txt"
    entry_points.write_text("[stigmer.kinds]\nnote = note_kind\norg_required = org_required\n")
    cli.start()
    cli.ok("apply", "-f", "-", input=NOTE)
    cli.ok("apply", "--org", "acme", "-f", "-", input=f"{NOTE}---\n{CODER}")
    assert cli.fails("get", "notes", "-A") == "org: must not be empty"

    status = cli("local", "status")
    assert status.code == 0, status.err
    note_row = next(line for line in lines(status.out) if line.startswith("note "))
    assert note_row.split(None, 1)[1] == "? (cannot count: org: must not be empty)"

    export = cli("export", "--all")
    assert export.code == 0, export.err
    notes = [d["metadata"]["org"] for d in yaml.safe_load_all(export.out) if d["kind"] == "Note"]
    assert sorted(notes) == ["acme", "local"]
