"""What ``apply`` and ``import`` read: YAML aliases, bytes that are not UTF-8, CRLF line endings.

A file and stdin must read the same documents, and input the CLI cannot take is refused, whole,
with one line naming where, before anything is written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import TIMEOUT, Result, Stigmer, stored_nothing, write
from .test_resources import CODER


def _laughs(levels: int, *, name: str = "lol") -> str:
    """A workflow whose ``taskConfig`` holds ``levels`` lists of ten aliases of the one before:
    10^levels items from a few hundred bytes."""
    config = ["      a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    config += [f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return (
        f"kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n"
        "  document: {dsl: 1.0.0, namespace: a, name: b, version: 0.1.0}\n"
        "  tasks:\n  - name: t\n    kind: set\n    flow: {then: end}\n    taskConfig:\n" + "\n".join(config) + "\n"
    )


def _run(stigmer: Stigmer, *args: str, input: bytes) -> Result:
    """``stigmer`` given bytes on stdin (the fixture's helper takes text), in a UTF-8 locale."""
    done = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli", *args],
        input=input,
        capture_output=True,
        env={**stigmer.env(), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
        timeout=TIMEOUT,
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def _nothing_written(stigmer: Stigmer) -> None:
    """Nothing stored: a daemon's store holds no such agent, and no store was made without one."""
    said = stigmer.fails("get", "agent", "coder")
    assert said == "agent 'coder' not found in org 'local'" or " holds no store, so `stigmer get`" in said, said
    assert stored_nothing(stigmer)


def test_aliases_expanding_a_document_past_a_request_refuse_the_whole_file(
    stigmer: Stigmer, daemon: str, tmp_path: Path
) -> None:
    """Aliases were walked expanded: 600 bytes took 48 s and 1.8 GB before the server refused them,
    and the documents before the bomb were written by then."""
    bomb = _laughs(5)  # 123,471 items, past the 100,000 a request may carry
    path = write(tmp_path / "lol.yaml", CODER, bomb)
    message = stigmer.fails("apply", "-f", str(path))
    assert message == (
        f"{path}, document 2: its YAML aliases expand it to 123,471 items (list elements and mapping entries), "
        "more than 100,000 (STIGMER_MAX_REQUEST_ITEMS: the most one request may carry)"
    ), message
    message = stigmer.fails("import", input="---\n".join((CODER, bomb)))
    assert message.startswith("<stdin>, document 2: its YAML aliases expand it to 123,471 items"), message
    _nothing_written(stigmer)

    text = "x" * 1000
    big_text = f"{CODER}---\nkind: Agent\nmetadata: {{name: big}}\nspec:\n  description: &d {text}\n  mcpServers:\n"
    big_text += "".join(f"  - {{name: s{i}, command: *d}}\n" for i in range(5000))
    message = stigmer.fails("apply", "-f", "-", input=big_text)
    assert message.startswith("<stdin>, document 2: its YAML aliases expand it to 5,0"), message
    assert "characters of text, more than 4,194,304 (the most one request may carry)" in message
    cycle = "kind: Workflow\nmetadata: {name: cycle}\nspec:\n  tasks:\n  - &t {name: t, taskConfig: {again: [*t]}}\n"
    message = stigmer.fails("apply", "-f", "-", input="---\n".join((CODER, cycle)))
    assert message == (
        "<stdin>, document 2: a YAML alias stands inside the node its anchor names (&a [*a]), so it expands without end"
    ), message
    _nothing_written(stigmer)

    # aliases within the bounds are read as before
    assert stigmer.ok("apply", "-f", "-", input=_laughs(4)).strip() == "workflow/lol created"


def test_the_bound_on_aliases_is_the_request_item_limit_as_set(stigmer: Stigmer) -> None:
    small = {"STIGMER_MAX_REQUEST_ITEMS": "1000"}
    refused = stigmer("apply", "-f", "-", input=_laughs(4), env=small)
    assert refused.code == 1
    assert refused.err.strip().endswith("more than 1,000 (STIGMER_MAX_REQUEST_ITEMS: the most one request may carry)")
    bad = stigmer("apply", "-f", "-", input=_laughs(2), env={"STIGMER_MAX_REQUEST_ITEMS": "many"})
    assert (bad.code, bad.err.strip()) == (1, "stigmer: STIGMER_MAX_REQUEST_ITEMS='many' is not a whole number")
    assert "holds no store" in stigmer.fails("get", "workflow", "lol")  # nothing was written


def test_stdin_that_is_not_utf8_is_refused_like_a_file(stigmer: Stigmer, tmp_path: Path) -> None:
    """Stdin was decoded with lone surrogates for the bad bytes, which then failed as
    ``unexpected error: UnicodeEncodeError`` where a file says what is wrong."""
    latin1 = (CODER + '---\nkind: Agent\nmetadata: {name: second}\nspec: {instructions: "caf\xe9"}\n').encode("latin-1")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(latin1)
    at = latin1.index(b"\xe9")
    assert stigmer.fails("apply", "-f", str(path)) == (
        f"{path}: not UTF-8 text (YAML or JSON): invalid continuation byte at byte {at}"
    )
    for args in (("apply", "-f", "-"), ("import",)):
        result = _run(stigmer, *args, input=latin1)
        assert (result.code, result.err.strip()) == (
            1,
            f"stigmer: <stdin>: not UTF-8 text (YAML or JSON): invalid continuation byte at byte {at}",
        ), result
    _nothing_written(stigmer)


def test_an_export_with_crlf_line_endings_imports_from_stdin_as_from_a_file(stigmer: Stigmer, tmp_path: Path) -> None:
    """A file's text had CRLF made LF as Python read it, stdin's did not: the export's last line
    was not found and ``import < FILE`` refused it as cut short while ``import -f FILE`` took it."""
    stigmer.ok("apply", "-f", str(write(tmp_path / "coder.yaml", CODER)))
    exported = stigmer.ok("export", "--all")
    crlf = exported.replace("\n", "\r\n").encode()
    path = tmp_path / "crlf.yaml"
    path.write_bytes(crlf)
    for target, args, given in (("stdin", ("import",), crlf), ("file", ("import", "-f", str(path)), b"")):
        data_dir = ("--data-dir", str(tmp_path / target))
        result = _run(stigmer, *args, *data_dir, input=given)
        assert (result.code, result.out.strip()) == (0, "imported 2 of 2 resources (2 created)"), result
        assert stigmer.ok("export", "--all", *data_dir) == exported


def test_a_merge_key_merges_its_mapping_under_the_keys_beside_it(stigmer: Stigmer) -> None:
    """``<<: *base`` (as kubectl reads it) was refused as a tag nothing could construct: the check
    for keys given twice built every key, the merge key too."""
    doc = (
        "kind: Agent\nmetadata:\n  name: merged\n  labels:\n    <<: &base {team: core, tier: gold}\n"
        "    tier: silver\nspec: {description: &about Merges.}\n"
    )
    stigmer.ok("apply", "-f", "-", input=doc)
    shown = yaml.safe_load(stigmer.ok("get", "agent", "merged", "-o", "yaml"))
    assert shown["metadata"]["labels"] == {"team": "core", "tier": "silver"}
    twice = doc.replace("    tier: silver\n", "    tier: silver\n    tier: bronze\n")
    assert "found the key 'tier' twice" in stigmer.fails("apply", "-f", "-", input=twice)


def test_a_request_read_from_stdin_by_call_is_read_as_a_file(stigmer: Stigmer) -> None:
    """``call -f -`` read stdin on its own: bytes that are not UTF-8 were an unexpected error."""
    refused = _run(stigmer, "call", "agent", "list", "-f", "-", input=b"org: caf\xe9\n")
    assert refused.code == 1 and "<stdin>: not UTF-8 text (YAML or JSON)" in refused.err, refused.err
    listed = _run(stigmer, "call", "agent", "list", "-f", "-", "-o", "json", input=b"pageSize: 5\r\n")
    assert listed.code == 0, listed.err
