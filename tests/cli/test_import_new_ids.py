"""`stigmer import --new-ids`: an org copied into another org of the store it came from.

An id names one object in one org across the whole store, so importing an export a second
time into its own server was refused for every object; `--new-ids` makes copies under new
ids that name each other as the originals did.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stigmer_core.cli.commands.transfer import HELD_ELSEWHERE_SHOWN

from .conftest import Stigmer
from .test_manifests import MANIFESTS

HINT = "(to copy it into this org under a new id, import with --new-ids, which also changes the ids naming it in the other documents)"
_ID = re.compile(r"\b[a-z]{2,5}-[0-9a-hjkmnp-tv-z]{26}\b")


def _told_once_each_then_counted(err: str, count: int) -> None:
    """The first refusals for ids held elsewhere are named with the hint, the rest counted in one
    line (an export of thousands printed the hint thousands of times)."""
    shown = min(count, HELD_ELSEWHERE_SHOWN)
    assert err.count(HINT) == shown, err
    assert len(err.strip().splitlines()) == shown + (count > shown), err
    if count > shown:
        assert f"{count - shown} more documents were refused the same way: their ids are held in another org" in err


def _by_name(exported: str) -> dict[tuple[str, str], dict[str, object]]:
    docs = [d for d in yaml.safe_load_all(exported) if d]
    return {(d["kind"], d["metadata"]["slug"]): d for d in docs}


def test_an_org_is_copied_under_new_ids_that_name_each_other(stigmer: Stigmer) -> None:
    stigmer.ok("apply", "-f", str(MANIFESTS / "all.yaml"))
    original = stigmer.ok("export", "--all")
    count = len(_by_name(original))

    refused = stigmer("import", "--to-org", "copy", input=original)
    assert refused.code == 1 and f"imported 0 of {count} resources" in refused.out, refused.out
    _told_once_each_then_counted(refused.err, count)

    copied = stigmer("import", "--to-org", "copy", "--new-ids", input=original)
    assert copied.code == 0, copied.err
    assert f"imported {count} of {count} resources ({count} created)" in copied.out, copied.out
    assert stigmer.ok("export", "--all", "--org", "local") == original  # the originals are as they were

    copy = stigmer.ok("export", "--all", "--org", "copy")
    old, new = _by_name(original), _by_name(copy)
    assert old.keys() == new.keys()
    old_ids = {d["metadata"]["id"] for d in old.values()}  # type: ignore[index]
    renamed = {new[k]["metadata"]["id"]: old[k]["metadata"]["id"] for k in old}  # type: ignore[index]
    assert not old_ids & renamed.keys(), "a copy kept its original's id"
    named = set(_ID.findall(copy))
    assert named <= renamed.keys(), f"the copies name ids that are not theirs: {named - renamed.keys()}"
    # Every id a copy holds named back to its original's: the copies are the originals, org aside.
    restored = _ID.sub(lambda m: renamed[m.group(0)], copy).replace("org: copy", "org: local")
    assert list(yaml.safe_load_all(restored)) == list(yaml.safe_load_all(original))

    again = stigmer("import", "--to-org", "copy", "--new-ids", input=original)
    assert again.code == 0 and f"({count} unchanged)" in again.out, again.out
    assert stigmer.ok("export", "--all", "--org", "copy") == copy


def _ok(stigmer: Stigmer, *args: str, token: str, input: str | None = None) -> str:
    result = stigmer(*args, input=input, env={"STIGMER_TOKEN": token})
    assert result.code == 0, f"stigmer {' '.join(args)} failed ({result.code}):\n{result.err}"
    return result.out


def test_a_caller_who_may_not_see_the_originals_is_told_of_new_ids_too(stigmer: Stigmer, tmp_path: Path) -> None:
    """A token of org 'beta' only is told NOT_FOUND for an id org 'acme' holds (it may not learn
    whose it is): the hint comes from the refusal naming the document's own id."""
    admin = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "a").strip()
    beta = stigmer.ok("token", "create", "--org", "beta", "--role", "editor", "--name", "b").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    remote = ("--backend", "remote", "--endpoint", stigmer.start().address)
    _ok(stigmer, "apply", "-f", str(MANIFESTS / "all.yaml"), "--org", "acme", *remote, token=admin)
    exported = _ok(stigmer, "export", "--all", "--org", "acme", *remote, token=admin)
    count = len(_by_name(exported))

    refused = stigmer("import", "--to-org", "beta", *remote, input=exported, env={"STIGMER_TOKEN": beta})
    assert refused.code == 1 and "acme" not in refused.err, refused.err
    _told_once_each_then_counted(refused.err, count)

    copied = stigmer("import", "--to-org", "beta", "--new-ids", *remote, input=exported, env={"STIGMER_TOKEN": beta})
    assert copied.code == 0 and f"({count} created)" in copied.out, copied.err
    agent = yaml.safe_load(
        _ok(stigmer, "get", "agent", "support-bot", "--org", "beta", "-o", "yaml", *remote, token=beta)
    )
    instance_id = agent["status"]["defaultInstanceId"]
    instance = yaml.safe_load(
        _ok(stigmer, "get", "agentinstance", instance_id, "--org", "beta", "-o", "yaml", *remote, token=beta)
    )
    assert instance["spec"]["agentId"] == agent["metadata"]["id"]
    assert instance["metadata"]["ownerReferences"] == [{"kind": "Agent", "id": agent["metadata"]["id"]}]
