"""A kind the CLI has never heard of gets every command, locally and remotely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import Stigmer, lines, write
from .test_resources import CODER

HERE = Path(__file__).parent
NOTE = """\
kind: nt
metadata: {name: Hello, labels: {topic: greeting}}
spec: {text: hi there}
"""


@pytest.fixture
def with_note_kind(stigmer: Stigmer, tmp_path: Path) -> Stigmer:
    return _install_note_kind(stigmer, tmp_path)


def _install_note_kind(stigmer: Stigmer, tmp_path: Path, module: str = "note_kind") -> Stigmer:
    """Install ``module`` (``note_kind`` or a variant of it in this package) as a package would:
    an entry point in the ``stigmer.kinds`` group."""
    site = _note_distribution(tmp_path / "site", "0.1", module)
    stigmer.python_path += [site, HERE if module == "note_kind" else HERE.parent]
    return stigmer


def _note_distribution(site: Path, version: str, module: str = "note_kind") -> Path:
    """``site`` holding release ``version`` of the ``note-kind`` distribution, its entry point naming ``module``."""
    dist_info = site / f"note_kind-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: note-kind\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text(f"[stigmer.kinds]\nnote = {module}\n")
    return site


def test_every_command_works_for_a_third_party_kind(with_note_kind: Stigmer, tmp_path: Path) -> None:
    cli = with_note_kind
    address = cli.start().address
    assert "thirdparty.note.v1.NoteQueryController" in cli.ok("kinds")
    assert "note " in cli.ok("local", "status")

    path = write(tmp_path / "mixed.yaml", NOTE, CODER)
    assert lines(cli.ok("apply", "-f", str(path))) == ["agent/coder created", "note/hello created"]

    table = lines(cli.ok("get", "notes"))
    assert table[0].split() == ["NAME", "ID", "AGE", "PHASE"] and table[1].startswith("hello   note-")
    assert json.loads(cli.ok("get", "Note", "hello", "-o", "json"))["spec"] == {"text": "hi there"}
    assert [row.split()[0] for row in lines(cli.ok("list", "nt", "--limit", "1"))[1:]] == ["hello"]
    message = cli.fails("list", "nt", "-l", "topic=greeting")
    assert message == "notes cannot be listed by label: the kind's list request has no labels"

    exported = cli.ok("export", "--all")
    assert [d["kind"] for d in yaml.safe_load_all(exported)] == ["Agent", "AgentInstance", "Note"]
    restored = str(tmp_path / "restored" / "data")
    cli.ok("import", "--data-dir", restored, input=exported)
    assert cli.ok("export", "--all", "--data-dir", restored) == exported

    cli.ok("backend", "switch", "remote", "--endpoint", address)
    assert "hello" in cli.ok("get", "nt", "hello")  # kinds by reflection, short name from the installed plugin
    assert cli.ok("delete", "note", "hello").strip() == "note/hello deleted"
    assert cli.fails("get", "note", "hello") == "note 'hello' not found in org 'local'"


MEMO = """\
kind: Memo
metadata: {name: Reminder}
spec: {text: water the plants}
"""


def test_a_kind_without_the_rpcs_import_needs_fails_its_documents_only(with_note_kind: Stigmer, tmp_path: Path) -> None:
    """It stopped the import as if the server were gone, with 'importing again finishes the job'
    (importing again failed the same way); a failing document is reported and the others run."""
    cli = with_note_kind
    (cli.python_path[0] / "note_kind-0.1.dist-info" / "entry_points.txt").write_text(
        "[stigmer.kinds]\nnote = note_kind\nmemo = memo_kind\n"
    )
    documents = write(tmp_path / "mixed.yaml", NOTE, MEMO, NOTE.replace("Hello", "Later"))
    result = cli("import", "-f", str(documents))
    assert result.code == 1, result.err
    assert result.out.startswith("imported 2 of 3 resources (2 created, 1 failed)"), result.out
    assert lines(result.err) == [
        f"stigmer: {documents}, document 2 (memo/reminder): kind Memo has no 'getByReference' or 'apply' rpc, "
        "which apply and import need"
    ]
    assert "finishes the job" not in result.err
    assert [row.split()[0] for row in lines(cli.ok("get", "notes"))[1:]] == ["hello", "later"]


def test_a_kind_installed_after_the_daemon_started_says_to_restart_it(stigmer: Stigmer, tmp_path: Path) -> None:
    """The daemon answered grpc's bare "Method not found!" for a kind the CLI knows from the package."""
    stigmer.start()
    installed = _install_note_kind(stigmer, tmp_path)  # for the commands from now on, not the daemon
    message = installed.fails("get", "notes")
    assert message.startswith("the stigmer server at 127.0.0.1:") and "Method not found" not in message
    assert message.endswith(
        " has no such method (a server serves the kinds installed when it started: after installing a kind's "
        "package, restart it; the local daemon with `stigmer local stop`, then `stigmer local start`)"
    ), message
    installed.ok("local", "stop")
    installed.start()
    served = installed("get", "notes")
    assert served.code == 0 and "no notes found" in served.err, served.err


def test_ids_of_a_prefix_with_a_dash_are_ids_to_the_cli(stigmer: Stigmer, tmp_path: Path) -> None:
    """The CLI told ids from slugs by a pattern of its own, which a prefix with a dash did not
    match: `get KIND ID` said not found, and an import lost what referred to such ids."""
    _install_note_kind(stigmer, tmp_path, "cli.dash_note_kind")
    stigmer.start()
    stigmer.ok("apply", "-f", "-", input=NOTE)
    made = json.loads(stigmer.ok("get", "note", "hello", "-o", "json"))["metadata"]["id"]
    assert made.startswith("acme-note-")
    assert json.loads(stigmer.ok("get", "note", made, "-o", "json"))["metadata"]["id"] == made
    assert lines(stigmer.ok("delete", "note", made, "--dry-run")) == ["note/hello would be deleted (dry run)"]


def test_a_plugins_bug_is_one_line_naming_its_step(stigmer: Stigmer, tmp_path: Path) -> None:
    """In process (no daemon), a step's bug printed its traceback around the error line."""
    _install_note_kind(stigmer, tmp_path, "cli.buggy_note_kind")
    result = stigmer("apply", "-f", "-", input=NOTE)
    assert result.code == 1
    assert "internal error in step 'normalize' of Note create: KeyError" in result.err
    assert "Traceback" not in result.err, result.err
    verbose = stigmer("-v", "apply", "-f", "-", input=NOTE)
    assert "Traceback" in verbose.err  # stigmer -v shows it


def test_a_slug_in_a_reference_field_of_a_kind_not_installed_beside_the_cli_is_refused_truly(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """The server said "stigmer apply turns a slug into its id" while stigmer apply had just failed
    to: a CLI without the kind's plugin cannot tell which fields are references."""
    _install_note_kind(stigmer, tmp_path, "cli.referring_note_kind")
    address = stigmer.start().address
    stigmer.ok("apply", "-f", str(write(tmp_path / "coder.yaml", CODER)))
    pinned = "kind: Note\nmetadata: {name: Pinned}\nspec: {text: coder}\n"
    with_plugin = stigmer.python_path[:]
    stigmer.python_path.clear()
    stigmer.ok("backend", "switch", "remote", "--endpoint", address)
    refused = stigmer("apply", "-f", "-", input=pinned)
    assert refused.code == 1
    assert "spec.text: 'coder' is not an agent id like 'agt-<ulid>'" in refused.err, refused.err
    assert "where this kind's plugin is installed beside the CLI" in refused.err, refused.err
    told = "this stigmer could not turn the slug into its id: kind Note's plugin is not installed where it runs"
    assert told in refused.err, refused.err
    stigmer.python_path += with_plugin
    assert lines(stigmer.ok("apply", "-f", "-", input=pinned)) == ["note/pinned created"]


def test_an_export_names_the_secret_fields_it_carries_as_the_placeholder(stigmer: Stigmer, tmp_path: Path) -> None:
    """It wrote them silently, and the import of the backup then refused them."""
    _install_note_kind(stigmer, tmp_path, "cli.secret_note_kind")
    stigmer.ok("apply", "-f", "-", input="kind: Note\nmetadata: {name: Key}\nspec: {text: s3cr3t}\n")
    exported = stigmer("export", "--all")
    assert exported.code == 0, exported.err
    assert "s3cr3t" not in exported.out and "<redacted>" in exported.out
    assert (
        "note: Note local/key (note-" in exported.err
        and "spec.text exported as the placeholder '<redacted>' (a secret is never given out): an import into a "
        "store without this object refuses it until the document carries the value in its place"
        in exported.err
    ), exported.err
    restored = stigmer("import", "--data-dir", str(tmp_path / "restored"), input=exported.out)
    assert restored.code == 1 and "no stored value to keep" in restored.err, restored.err
    filled = exported.out.replace("<redacted>", "s3cr3t")
    stigmer.ok("import", "--data-dir", str(tmp_path / "filled"), input=filled)


def _note_release(stigmer: Stigmer, tmp_path: Path, version: str) -> None:
    """Make release ``version`` of the note kind's distribution the one installed."""
    stigmer.python_path[:] = [_note_distribution(tmp_path / f"site-{version}", version), HERE]


def test_an_older_release_of_a_kind_still_reads_the_store_a_newer_one_wrote(stigmer: Stigmer, tmp_path: Path) -> None:
    """A plugin downgraded by mistake (an older virtualenv, a pinned requirement) refused every
    command on the store, reading ones too, with only the override variable for a way out."""
    _note_release(stigmer, tmp_path, "0.2")
    stigmer.ok("apply", "-f", "-", input=NOTE)  # in process: release 0.2 reconciles the store
    _note_release(stigmer, tmp_path, "0.1")
    refusal = "kind 'Note' is served here by note-kind 0.1, older than note-kind 0.2, which last reconciled this store"
    for command in (("get", "notes"), ("list", "notes"), ("export", "--all")):
        result = stigmer(*command)
        assert result.code == 0, result.err
        assert "hello" in result.out
        (warning,) = result.err.strip().splitlines()[:1]
        assert warning == (
            f"stigmer: {refusal}: the store is opened read-only, so nothing can be written and secret values "
            "stay sealed; to write, upgrade the plugin to that release (docs/plugins.md, Upgrading a kind plugin "
            "on a team server)"
        ), result.err
    assert stigmer.fails("apply", "-f", "-", input=NOTE).startswith(f"{refusal}: serving it would remove")
    assert stigmer.fails("delete", "note", "hello").startswith(refusal)
    _note_release(stigmer, tmp_path, "0.2")
    assert "hello" in stigmer.ok("get", "notes")  # nothing of the newer release's was changed
