"""A skill's whole history moves with `stigmer export` / `stigmer import`.

An export carried only a skill's current version: after an import, a reference pinning an
earlier one by tag or hash (an agent's ``skillRefs``) pointed at nothing, and the versions, their
tags and zips were gone. These tests move a skill of three versions (one version under two tags,
one without the zip the version before it had) and an agent pinning older versions between LMDB
stores; ``tests/test_postgres_transfer.py`` moves the same through a daemon on PostgreSQL.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import zipfile
from typing import Any

import yaml

from stigmer_plugins.skill_history import version_of

from .conftest import Stigmer


def skill_zip(markdown: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", markdown)
        archive.writestr("scripts/run.sh", f"echo {len(markdown)}\n")
    return buf.getvalue()


def fill(stigmer: Stigmer) -> list[str]:
    """Skill ``deploy``: v1 (zip, tag v1), v2 (no zip, tags v2 and beta), v3 (zip, tag v3, current),
    and agent ``pinned`` naming v1 by tag and v2 by hash. The version hashes, oldest first."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient

    made: list[str] = []
    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        for n, tag, zipped in ((1, "v1", True), (2, "v2", False), (2, "beta", False), (3, "v3", True)):
            md = f"---\nname: deploy\ndescription: Ships it.\n---\nStep {n}.\n"
            push = skill_pb2.PushSkillRequest(skill_md=md, tag=tag, artifact=skill_zip(md) if zipped else b"")
            pushed: Any = skills.call("push", push)
            if pushed.metadata.version.id not in made:
                made.append(pushed.metadata.version.id)
    agent = (
        "kind: Agent\nmetadata: {name: pinned}\nspec:\n  instructions: Deploy.\n  skillRefs:\n"
        f"  - {{slug: deploy, version: v1}}\n  - {{slug: deploy, version: '{made[1]}'}}\n"
    )
    stigmer.ok("apply", "-f", "-", input=agent)
    return made


def _call(stigmer: Stigmer, where: tuple[str, ...], method: str, *sets: str) -> Any:
    args = [arg for s in sets for arg in ("--set", s)]
    return json.loads(stigmer.ok("call", "skill", method, *args, "-o", "json", *where))


def seen(stigmer: Stigmer, *where: str) -> dict[str, Any]:
    """What references and readers of skill ``deploy`` see, wherever it is stored (``where``:
    ``--data-dir DIR``, or ``--backend remote --endpoint ADDR``)."""
    versions = _call(stigmer, where, "listVersions", "skillId=deploy")
    tags = {t["tag"]: t["versionHash"] for t in _call(stigmer, where, "listTags", "skillId=deploy")["tags"]}
    zips = {}
    for v in versions:
        key = v["status"].get("artifactStorageKey")
        if key:
            data = _call(stigmer, where, "getArtifact", f"artifactStorageKey={key}")["artifact"]
            zips[v["metadata"]["version"]["id"]] = hashlib.sha256(data.encode()).hexdigest()  # of its base64
    agent = json.loads(stigmer.ok("get", "agent", "pinned", "-o", "json", *where))
    pinned = [
        _call(stigmer, where, "getByReference", "slug=deploy", f"version={ref['version']}")["metadata"]["version"]["id"]
        for ref in agent["spec"]["skillRefs"]
    ]
    by_tag = {
        tag: _call(stigmer, where, "getByReference", "slug=deploy", f"version={tag}")["metadata"]["version"]["id"]
        for tag in tags
    }
    current = _call(stigmer, where, "getByReference", "slug=deploy")
    return {
        "versions": [(v["metadata"]["version"]["id"], v["spec"]["skillMd"]) for v in versions],
        "tags": tags,
        "by_tag": by_tag,
        "zips": zips,
        "pinned": pinned,
        "current": (current["metadata"]["id"], current["metadata"]["version"]["id"], current["spec"].get("tag")),
    }


def test_every_version_tag_and_zip_of_a_skill_moves_to_a_fresh_store(stigmer: Stigmer, tmp_path: Any) -> None:
    made = fill(stigmer)
    before = seen(stigmer)
    assert [digest for digest, _ in before["versions"]] == made
    assert before["tags"] == {"v1": made[0], "v2": made[1], "beta": made[1], "v3": made[2]}
    assert before["pinned"] == [made[0], made[1]] and set(before["zips"]) == {made[0], made[2]}

    result = stigmer("export", "--all")
    assert result.code == 0, result.err
    assert "note:" not in result.err, result.err  # nothing is left behind to be named
    backup = result.out
    (skill,) = [d for d in yaml.safe_load_all(backup) if d and d["kind"] == "Skill"]
    assert [(h["version"], h.get("tags")) for h in skill["history"]] == [
        (made[0], ["v1"]),
        (made[1], ["beta", "v2"]),
        (made[2], ["v3"]),
    ]
    assert "skillMd" not in skill["history"][2]  # the current version is the document's spec

    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    assert stigmer.ok("import", *restored, input=backup).strip() == "imported 3 of 3 resources (3 created)"
    assert seen(stigmer, *restored) == before
    again = stigmer.ok("import", *restored, input=backup)
    assert again.strip() == "imported 3 of 3 resources (3 unchanged)", again
    assert stigmer.ok("apply", "-f", "-", *restored, input=backup).count(" unchanged") == 3
    assert seen(stigmer, *restored) == before
    assert stigmer.ok("export", "--all", *restored) == backup


def test_an_export_without_history_still_imports_and_history_then_fills_the_rest(
    stigmer: Stigmer, tmp_path: Any
) -> None:
    """An export written before skills carried their history holds the current version only: it
    imports as it did. The same skill's full export, imported over it, adds the versions it lacks
    and keeps the current one."""
    made = fill(stigmer)
    backup = stigmer.ok("export", "--all")
    old = [d for d in yaml.safe_load_all(backup) if d]
    for doc in old:
        doc.pop("history", None)
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    assert "(3 created)" in stigmer.ok("import", *restored, input=yaml.safe_dump_all(old))
    only = _call(stigmer, restored, "listVersions", "skillId=deploy")
    assert [v["metadata"]["version"]["id"] for v in only] == [made[2]]  # the pins dangle: what history fixes

    assert "1 configured, 2 unchanged" in stigmer.ok("import", *restored, input=backup)
    after = seen(stigmer, *restored)
    assert sorted(v[0] for v in after["versions"]) == sorted(made)
    assert after["current"][1:] == (made[2], "v3")
    assert after["tags"] == {"v1": made[0], "v2": made[1], "beta": made[1], "v3": made[2]}
    assert "3 unchanged" in stigmer.ok("import", *restored, input=backup)


def test_a_history_entry_that_does_not_match_its_hash_is_refused_before_anything_is_written(
    stigmer: Stigmer, tmp_path: Any
) -> None:
    fill(stigmer)
    docs = [d for d in yaml.safe_load_all(stigmer.ok("export", "skills")) if d]
    docs[0]["history"][0]["skillMd"] += "changed\n"
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    result = stigmer("apply", "-f", "-", *restored, input=yaml.safe_dump_all(docs))
    assert result.code == 1
    assert "history[0].version: is not the hash of the entry's skillMd and artifact" in result.err, result.err
    assert "INTERNAL" not in result.err
    assert "deploy" not in stigmer.ok("get", "skills", *restored)

    docs[0]["history"][0] = {"version": "not-a-hash"}
    result = stigmer("apply", "-f", "-", *restored, input=yaml.safe_dump_all(docs))
    assert result.code == 1
    assert "history[0].version: must be a version hash (64 lowercase hex digits)" in result.err, result.err


def test_each_version_keeps_the_description_it_was_written_with(stigmer: Stigmer, tmp_path: Any) -> None:
    """A version's description is part of what getByReference answers for it: replaying every
    version with the document's description rewrote the older ones' on the target."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient

    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        for n, about in ((1, "First cut."), (2, "Ships to staging."), (3, "Ships to staging.")):
            md = f"---\nname: notes\ndescription: Notes.\n---\nStep {n}.\n"
            skills.call("push", skill_pb2.PushSkillRequest(skill_md=md, tag=f"v{n}", description=about))
    backup = stigmer.ok("export", "--all")
    (skill,) = [d for d in yaml.safe_load_all(backup) if d and d["kind"] == "Skill"]
    assert [h.get("description") for h in skill["history"]] == ["First cut.", None, None]  # only where it differs

    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    stigmer.ok("import", *restored, input=backup)
    for where in ((), restored):
        described = [
            _call(stigmer, where, "getByReference", "slug=notes", f"version=v{n}")["spec"].get("description")
            for n in (1, 2, 3)
        ]
        assert described == ["First cut.", "Ships to staging.", "Ships to staging."], where
    assert stigmer.ok("export", "--all", *restored) == backup

    skill["history"][2]["description"] = "Not the spec's."
    refused = stigmer("import", "--data-dir", str(tmp_path / "other" / "data"), input=yaml.safe_dump(skill))
    assert refused.code != 0 and "history[2].description" in refused.err, refused.err
    assert "is given without skillMd" in refused.err, refused.err


def test_a_version_without_a_description_keeps_none_through_an_import(stigmer: Stigmer, tmp_path: Any) -> None:
    """The replay pushed each later version, and a push keeps the stored description when given
    none: the version between two described ones took the first one's, and the imported history
    exported differently from the one imported."""
    for n, about in ((1, "First cut."), (2, ""), (3, "Third.")):
        described = f"description: {about}, " if about else ""
        stigmer.ok(
            "apply",
            "-f",
            "-",
            input=f"kind: Skill\nmetadata: {{name: bare}}\nspec: {{{described}tag: v{n}, skillMd: 'Step {n}.'}}\n",
        )
    backup = stigmer.ok("export", "skill")
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    stigmer.ok("import", *restored, input=backup)
    for where in ((), restored):
        described = [
            _call(stigmer, where, "getByReference", "slug=bare", f"version=v{n}")["spec"].get("description", "")
            for n in (1, 2, 3)
        ]
        assert described == ["First cut.", "", "Third."], where
    assert stigmer.ok("export", "skill", *restored) == backup


def _push_all(stigmer: Stigmer, pushes: list[tuple[str, str, bool]]) -> list[str]:
    """Push (markdown, tag, zipped) in order to skill ``rev``; the version hash of each push."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient

    made: list[str] = []
    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        for md, tag, zipped in pushes:
            push = skill_pb2.PushSkillRequest(
                slug="rev", skill_md=md, tag=tag, artifact=skill_zip(md) if zipped else b""
            )
            pushed: Any = skills.call("push", push)
            made.append(pushed.metadata.version.id)
    return made


def test_a_zipless_current_version_after_a_zipped_one_moves_as_it_is(stigmer: Stigmer, tmp_path: Any) -> None:
    """B (no zip), A (zip), B again: the import replayed A last, and the document (B, no zip)
    then kept A's zip, making a version that never existed, current and tagged ``b``."""
    b, a = "---\nname: rev\ndescription: R.\n---\nB.\n", "---\nname: rev\ndescription: R.\n---\nA.\n"
    made = _push_all(stigmer, [(b, "b", False), (a, "a", True), (b, "b", False)])
    assert made[0] == made[2] != made[1]
    before = stigmer.ok("export", "--all")
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    stigmer.ok("import", *restored, input=before)
    tags = {t["tag"]: t["versionHash"] for t in _call(stigmer, restored, "listTags", "skillId=rev")["tags"]}
    assert tags == {"b": made[0], "a": made[1]}
    current = _call(stigmer, restored, "getByReference", "slug=rev")
    assert current["metadata"]["version"]["id"] == made[0] and not current["status"].get("artifactStorageKey")
    versions = [v["metadata"]["version"]["id"] for v in _call(stigmer, restored, "listVersions", "skillId=rev")]
    assert sorted(versions) == sorted(made[:2])
    assert stigmer.ok("export", "--all", *restored) == before
    assert "(1 unchanged)" in stigmer.ok("import", *restored, input=before)


def test_a_history_entry_a_push_would_refuse_is_refused_before_anything_is_written(
    stigmer: Stigmer, tmp_path: Any
) -> None:
    """The replay's pushes refused a tag or zip midway, leaving a skill with half its versions."""
    fill(stigmer)
    (skill,) = [d for d in yaml.safe_load_all(stigmer.ok("export", "skills")) if d]
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    bad_zip = base64.b64encode(b"PK\x03\x04 not a zip").decode()
    for at, change, named in (
        (1, {"tags": ["be ta", "v2"]}, "history[1].tags"),
        (1, {"tags": ["x" * 129]}, "history[1].tags"),
        (1, {"tags": ["latest"]}, "history[1].tags"),
        (0, {"artifact": base64.b64encode(skill_zip("---\nother\n---\n")).decode()}, "history[0].skillMd"),
        (0, {"artifact": bad_zip}, "history[0].artifact"),
    ):
        doc = copy.deepcopy(skill)
        entry = doc["history"][at]
        entry.update(change)
        if "artifact" in change:  # a hash that agrees, so only the push's own rule is left to refuse it
            entry["version"] = version_of(entry["skillMd"], base64.b64decode(entry["artifact"]))
        result = stigmer("import", *restored, input=yaml.safe_dump(doc))
        assert result.code == 1 and named in result.err, (change, result.err)
        assert "INTERNAL" not in result.err
        assert "deploy" not in stigmer.ok("get", "skills", *restored), change


def test_a_document_its_own_write_would_refuse_is_refused_before_its_history_is_written(
    stigmer: Stigmer, tmp_path: Any
) -> None:
    """The history was replayed and the document itself applied last: a document whose zip
    contradicts its skillMd left the replayed versions on the target, and the import said it had
    written nothing."""
    fill(stigmer)
    (skill,) = [d for d in yaml.safe_load_all(stigmer.ok("export", "skills")) if d]
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    doc = copy.deepcopy(skill)
    other = skill_zip("---\nname: deploy\n---\nSomething else.\n")
    doc["spec"]["artifact"] = base64.b64encode(other).decode()
    (own,) = [entry for entry in doc["history"] if "skillMd" not in entry]
    own["version"] = version_of(doc["spec"]["skillMd"], other)  # a hash that agrees: only the zip's text is wrong
    result = stigmer("import", *restored, input=yaml.safe_dump(doc))
    assert result.code == 1 and "spec.skillMd" in result.err, result.err
    assert "deploy" not in stigmer.ok("get", "skills", *restored)


def test_a_version_stored_against_its_zips_skill_md_is_noted_by_export(
    stigmer: Stigmer, tmp_path: Any, monkeypatch: Any
) -> None:
    """Releases before the check stored, from a document without a zip, a version whose skillMd
    contradicts the zip it kept; no import takes it, and the export of a store upgraded with one
    exited 0 without a word: a backup found unrestorable only when it was needed."""
    from stigmer_core import Application
    from stigmer_core.api.agentic.skill.v1 import skill_pb2
    from stigmer_core.kind_client import KindClient
    from stigmer_plugins import skill

    zipped = "---\nname: kept\ndescription: K.\n---\nZipped.\n"
    with Application.open(stigmer.data_dir) as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        pushed: Any = skills.call(
            "push", skill_pb2.PushSkillRequest(skill_md=zipped, artifact=skill_zip(zipped), tag="v1")
        )
        monkeypatch.setattr(skill, "_check_kept_artifact", lambda ctx, obj: None)  # as an older release wrote it
        doc = skill_pb2.Skill(metadata=pushed.metadata, spec=pushed.spec)
        doc.spec.skill_md, doc.spec.tag = zipped.replace("Zipped.", "Edited."), "v2"
        edited: Any = skills.call("apply", doc)
    result = stigmer("export", "skills")
    assert result.code == 0, result.err
    assert f"version {edited.metadata.version.id[:12]}: its skillMd differs from the SKILL.md in its zip" in result.err
    assert pushed.metadata.version.id[:12] not in result.err, "the version that agrees is not named"


def test_a_skill_pushed_as_latest_exports_and_imports(stigmer: Stigmer, tmp_path: Any) -> None:
    """A push (or apply) with tag ``latest`` gives its version no tag and stores ``spec.tag:
    latest`` as sent; its export was refused by every import, the store it came from included,
    naming ``spec.tags``."""
    for n, tag in ((1, "v1"), (2, "latest")):
        stigmer.ok(
            "apply",
            "-f",
            "-",
            input=f"kind: Skill\nmetadata: {{name: notes}}\nspec: {{skillMd: '# v{n}', tag: {tag}}}\n",
        )
    exported = stigmer.ok("export", "skills")
    assert "tag: latest" in exported
    assert "(1 unchanged)" in stigmer.ok("import", input=exported)
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    stigmer.ok("import", *restored, input=exported)
    assert stigmer.ok("export", "skills", *restored) == exported
    doc = exported.replace("tag: latest", "tag: 'bad tag'")
    result = stigmer("import", *restored, input=doc)
    assert result.code == 1 and "spec.tag:" in result.err, result.err


def test_a_history_refused_partway_leaves_no_part_of_a_skill_the_import_was_making(
    stigmer: Stigmer, tmp_path: Any
) -> None:
    """A store keeping fewer versions per object than the export holds refused the replay partway:
    the skill was left with part of its history and not its current version."""
    made = fill(stigmer)
    backup = stigmer.ok("export", "--all")
    restored = ("--data-dir", str(tmp_path / "restored" / "data"))
    result = stigmer("import", *restored, input=backup, env={"STIGMER_MAX_VERSIONS_PER_OBJECT": "2"})
    assert result.code == 1, result.err
    assert "keeps 2 versions, and 2 is the most one object may keep" in result.err, result.err
    assert "the part of its history written before was deleted" in result.err, result.err
    listed = json.loads(stigmer.ok("get", "skills", "-o", "json", *restored))
    assert listed == [], listed  # nothing of the skill is left
    again = stigmer.ok("import", *restored, input=backup).strip()  # the skill made whole; the rest were
    assert again == "imported 3 of 3 resources (1 created, 2 unchanged)", again
    assert [digest for digest, _ in seen(stigmer, *restored)["versions"]] == made
