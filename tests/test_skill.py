"""Skill: push, content-addressed versions, version resolution, listVersions, artifacts."""

from __future__ import annotations

import hashlib
import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.skill.v1 import service_pb2_grpc as skill_grpc
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import key_families, raw_keys

MD_1 = "---\nname: Calculator\ndescription: Adds numbers\n---\n# Calculator\nAdd things.\n"
MD_2 = MD_1 + "Also subtract.\n"


def _zip(**files: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name.replace("__", "/"), text)
    return buf.getvalue()


class Skills:
    def __init__(self, channel: grpc.Channel) -> None:
        self.commands = skill_grpc.SkillCommandControllerStub(channel)
        self.queries = skill_grpc.SkillQueryControllerStub(channel)

    def push(self, **fields: Any) -> skill_pb2.Skill:
        return self.commands.push(skill_pb2.PushSkillRequest(**fields), timeout=10)  # type: ignore[no-any-return]

    def resolve(self, version: str, slug: str = "calculator") -> skill_pb2.Skill:
        ref = metadata_pb2.ApiResourceReference(slug=slug, version=version)
        return self.queries.getByReference(ref, timeout=10)  # type: ignore[no-any-return]

    def versions(self, skill_id: str, page_size: int = 0) -> list[skill_pb2.Skill]:
        found: list[skill_pb2.Skill] = []
        token = ""
        while True:
            page = self.queries.listVersions(
                skill_pb2.ListSkillVersionsRequest(skill_id=skill_id, page_size=page_size, page_token=token),
                timeout=10,
            )
            assert page_size == 0 or len(page.entries) <= page_size
            found.extend(page.entries)
            token = page.next_page_token
            if not token:
                return found


def _sha(*parts: bytes) -> str:
    return hashlib.sha256(b"".join(len(p).to_bytes(8, "big") + p for p in parts)).hexdigest()


def _code(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


def test_push_versions_by_content_and_resolves_latest_tag_and_hash(stigmer_channel: grpc.Channel) -> None:
    skills = Skills(stigmer_channel)
    first = skills.push(skill_md=MD_1, tag="stable")
    assert (first.metadata.name, first.metadata.slug) == ("Calculator", "calculator")
    assert first.spec.description == "Adds numbers" and first.spec.tag == "stable"
    h1 = first.metadata.version.id
    assert h1 == first.status.version_hash == _sha(MD_1.encode(), b"")
    assert first.status.state == skill_pb2.SKILL_STATE_READY

    # identical content under the same tag: nothing changes, no version is made
    again = skills.push(skill_md=MD_1, tag="stable")
    assert again == first
    assert [v.metadata.version.id for v in skills.versions(first.metadata.id)] == [h1]

    second = skills.push(skill_md=MD_2, tag="beta")
    h2 = second.metadata.version.id
    assert h2 != h1 and second.metadata.version.previous_version_id == h1
    assert second.metadata.resource_version > first.metadata.resource_version
    assert second.metadata.id == first.metadata.id

    for version in ("", "latest"):
        assert skills.resolve(version) == second
    assert skills.resolve("beta") == second
    assert skills.resolve(h2) == second
    old = skills.resolve("stable")
    assert old.spec.skill_md == MD_1 and old.metadata.version.id == h1
    assert skills.resolve(h1.upper()) == old
    for missing in ("nightly", "0" * 64):
        error = _code(skills.resolve, missing)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "version" in error.details()

    # the old content again: no new version, the head moves back; the tag moves with a tagged push
    back = skills.push(skill_md=MD_1, tag="beta")
    assert back.metadata.version.id == h1
    assert skills.resolve("beta").metadata.version.id == h1
    assert [v.metadata.version.id for v in skills.versions(first.metadata.id)] == [h1, h2]


def test_apply_makes_a_version_only_when_content_changes(stigmer_channel: grpc.Channel) -> None:
    skills = Skills(stigmer_channel)
    doc = skill_pb2.Skill(
        metadata=metadata_pb2.ApiResourceMetadata(name="Calculator", labels={"team": "a"}),
        spec=skill_pb2.SkillSpec(skill_md=MD_1, description="adds", tag="v1"),
    )
    created = skills.commands.apply(doc, timeout=10)
    same = skills.commands.apply(doc, timeout=10)
    assert same == created
    assert len(skills.versions(created.metadata.id)) == 1

    doc.spec.description = "adds numbers"
    described = skills.commands.apply(doc, timeout=10)
    assert described.metadata.resource_version > created.metadata.resource_version
    assert described.metadata.version == created.metadata.version
    assert len(skills.versions(created.metadata.id)) == 1

    doc.spec.skill_md = MD_2
    doc.spec.tag = "v2"
    changed = skills.commands.apply(doc, timeout=10)
    assert changed.metadata.version.id == _sha(MD_2.encode(), b"")
    assert changed.metadata.version.previous_version_id == created.metadata.version.id
    versions = skills.versions(created.metadata.id)
    # each version is the skill as it last was with that content
    assert [(v.spec.skill_md, v.spec.description) for v in versions] == [(MD_1, "adds numbers"), (MD_2, "adds numbers")]
    assert skills.resolve("v1").spec.skill_md == MD_1 and skills.resolve("v2") == changed

    error = _code(skills.commands.update, skill_pb2.Skill(metadata=changed.metadata, spec=skill_pb2.SkillSpec()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.skill_md" in [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
    doc.spec.tag = "a" * 64
    error = _code(skills.commands.apply, doc)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(error).violations] == ["spec.tag"]  # type: ignore[attr-defined]


def test_list_versions_pages_in_order(stigmer_channel: grpc.Channel) -> None:
    skills = Skills(stigmer_channel)
    pushed = [skills.push(name="Calculator", skill_md=f"# v{i}") for i in range(5)]
    other = skills.push(name="Other", skill_md="# other")
    hashes = [p.metadata.version.id for p in pushed]
    skill_id = pushed[0].metadata.id
    for size in (1, 2, 5, 0):
        assert [v.metadata.version.id for v in skills.versions(skill_id, page_size=size)] == hashes
    assert [v.spec.skill_md for v in skills.versions(skill_id)] == [f"# v{i}" for i in range(5)]
    assert len(skills.versions(other.metadata.id)) == 1

    first_page = skills.queries.listVersions(
        skill_pb2.ListSkillVersionsRequest(skill_id=skill_id, page_size=2), timeout=10
    )
    foreign = skill_pb2.ListSkillVersionsRequest(
        skill_id=other.metadata.id, page_size=2, page_token=first_page.next_page_token
    )
    assert _code(skills.queries.listVersions, foreign).code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = skill_pb2.ListSkillVersionsRequest(skill_id="skl-01arz3ndektsv4rrffq69g5fav")
    assert _code(skills.queries.listVersions, missing).code() == grpc.StatusCode.NOT_FOUND
    assert _code(skills.queries.listVersions, skill_pb2.ListSkillVersionsRequest()).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_list_tags_gives_every_tag_with_the_version_it_names_now(stigmer_channel: grpc.Channel) -> None:
    """A version's listVersions entry shows only the tag it was last written under: a second tag on
    the same content, or a tag moved to other content, was found nowhere (and an export lost it)."""
    skills = Skills(stigmer_channel)
    first = skills.push(name="Calculator", skill_md=MD_1, tag="v1")
    skills.push(name="Calculator", skill_md=MD_1, tag="stable")
    second = skills.push(name="Calculator", skill_md=MD_2, tag="v2")
    skills.push(name="Calculator", skill_md=MD_2, tag="beta")
    moved = skills.push(name="Calculator", skill_md=MD_2, tag="stable")
    v1, v2 = first.metadata.version.id, second.metadata.version.id
    assert [v.metadata.version.tag for v in skills.versions(first.metadata.id)] == ["stable", "stable"]

    def tags(page_size: int = 0) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        request = skill_pb2.ListSkillVersionsRequest(skill_id=moved.metadata.id, page_size=page_size)
        while True:
            page = skills.queries.listTags(request, timeout=10)
            found += [(t.tag, t.version_hash) for t in page.tags]
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token

    expected = [("beta", v2), ("stable", v2), ("v1", v1), ("v2", v2)]
    for size in (1, 3, 0):
        assert tags(size) == expected
    other = skills.push(name="Other", skill_md="# other")
    first_page = skills.queries.listTags(
        skill_pb2.ListSkillVersionsRequest(skill_id=first.metadata.id, page_size=1), timeout=10
    )
    foreign = skill_pb2.ListSkillVersionsRequest(
        skill_id=other.metadata.id, page_size=1, page_token=first_page.next_page_token
    )
    assert _code(skills.queries.listTags, foreign).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not skills.queries.listTags(skill_pb2.ListSkillVersionsRequest(skill_id=other.metadata.id)).tags
    missing = skill_pb2.ListSkillVersionsRequest(skill_id="skl-01arz3ndektsv4rrffq69g5fav")
    assert _code(skills.queries.listTags, missing).code() == grpc.StatusCode.NOT_FOUND
    error = _code(skills.queries.listTags, skill_pb2.ListSkillVersionsRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "skill_id" in str(error.details())


def test_a_zip_without_a_skill_md_carries_over_new_markdown(stigmer_channel: grpc.Channel) -> None:
    """Only a SKILL.md at the zip's root is held to the markdown: a zip of tools alone is kept
    under any text."""
    skills = Skills(stigmer_channel)
    tools = _zip(**{"tools__add.py": "print(1 + 1)\n"})
    pushed = skills.push(skill_md=MD_1, artifact=tools)
    doc = skill_pb2.Skill(metadata=pushed.metadata, spec=pushed.spec)
    doc.spec.skill_md = MD_2
    applied = skills.commands.apply(doc, timeout=10)
    assert applied.status.artifact == pushed.status.artifact
    assert applied.metadata.version.id == _sha(MD_2.encode(), hashlib.sha256(tools).hexdigest().encode())


def test_push_stores_the_artifact_by_hash_and_carries_it_over(stigmer_channel: grpc.Channel) -> None:
    skills = Skills(stigmer_channel)
    zipped = _zip(**{"SKILL.md": MD_1, "tools__add.py": "print(1 + 1)\n"})
    pushed = skills.push(artifact=zipped, tag="stable")  # markdown and name come from the zip
    artifact_sha = hashlib.sha256(zipped).hexdigest()
    assert pushed.spec.skill_md == MD_1 and pushed.metadata.slug == "calculator"
    assert pushed.status.artifact.sha256 == artifact_sha
    assert pushed.status.artifact.file_count == 2
    assert pushed.status.artifact.size_bytes == len(zipped)
    assert pushed.status.artifact_storage_key == f"{pushed.metadata.id}/{artifact_sha}"
    assert pushed.metadata.version.id == _sha(MD_1.encode(), artifact_sha.encode())
    got = skills.queries.getArtifact(
        skill_pb2.GetArtifactRequest(artifact_storage_key=pushed.status.artifact_storage_key), timeout=10
    )
    assert got.artifact == zipped

    # an apply of the document without a zip keeps the zip, so it may not contradict the zip's
    # SKILL.md (stored, it was a version no push and no import would take: its export could not
    # be imported); a description alone changes nothing of the version, the zip carries over
    doc = skill_pb2.Skill(metadata=pushed.metadata, spec=pushed.spec)
    doc.spec.skill_md = MD_2
    error = _code(skills.commands.apply, doc)
    assert [v.field for v in from_rpc_error(error).violations] == ["spec.skill_md"]  # type: ignore[attr-defined]
    assert "differs from the SKILL.md in the zip this skill keeps" in error.details()
    assert skills.resolve("stable") == pushed
    doc.spec.skill_md, doc.spec.description = MD_1, "adds numbers"
    described = skills.commands.apply(doc, timeout=10)
    assert described.status.artifact == pushed.status.artifact and described.metadata.version == pushed.metadata.version
    doc.metadata.resource_version = described.metadata.resource_version
    doc.spec.skill_md, doc.spec.tag = MD_2, "v2"
    doc.spec.artifact = _zip(**{"SKILL.md": MD_2, "tools__add.py": "print(1 + 1)\n"})
    applied = skills.commands.apply(doc, timeout=10)
    assert applied.metadata.version.id == _sha(MD_2.encode(), hashlib.sha256(doc.spec.artifact).hexdigest().encode())
    # a push without a zip makes a version without one; the old zip stays readable
    bare = skills.push(slug="calculator", skill_md=MD_2)
    assert not bare.HasField("status") or not bare.status.artifact_storage_key
    assert bare.metadata.version.id == _sha(MD_2.encode(), b"")
    assert skills.resolve("stable").status.artifact_storage_key == pushed.status.artifact_storage_key
    assert (
        skills.queries.getArtifact(
            skill_pb2.GetArtifactRequest(artifact_storage_key=pushed.status.artifact_storage_key), timeout=10
        ).artifact
        == zipped
    )

    error = _code(skills.push, skill_md=MD_2, artifact=zipped)
    assert [v.field for v in from_rpc_error(error).violations] == ["skill_md"]  # type: ignore[attr-defined]
    error = _code(skills.push, artifact=_zip(**{"README.md": "no skill here"}))
    assert [v.field for v in from_rpc_error(error).violations] == ["skill_md"]  # type: ignore[attr-defined]
    error = _code(skills.push, skill_md="# no front matter")
    assert [v.field for v in from_rpc_error(error).violations] == ["name"]  # type: ignore[attr-defined]
    stored_key = pushed.status.artifact_storage_key
    for key in ("nope", f"{pushed.metadata.id}/{'0' * 64}", stored_key + "\n"):
        error = _code(skills.queries.getArtifact, skill_pb2.GetArtifactRequest(artifact_storage_key=key))
        expected = grpc.StatusCode.NOT_FOUND if key.endswith("0" * 64) else grpc.StatusCode.INVALID_ARGUMENT
        assert error.code() == expected, key


def test_a_push_without_a_description_keeps_the_stored_one(stigmer_channel: grpc.Channel) -> None:
    """Every push whose SKILL.md had a `description:` line replaced the description set on purpose,
    though a push keeps what it is not given; only a new skill takes its SKILL.md's."""
    skills = Skills(stigmer_channel)
    assert skills.push(skill_md=MD_1).spec.description == "Adds numbers"  # new: the front matter's
    assert skills.push(skill_md=MD_2, description="adds, chosen").spec.description == "adds, chosen"
    third = MD_2.replace("Adds numbers", "Adds and subtracts") + "And multiply.\n"
    kept = skills.push(skill_md=third)
    assert (kept.spec.skill_md, kept.spec.description) == (third, "adds, chosen")


def test_rejected_push_stores_nothing_and_delete_clears_every_version(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    skills = Skills(stigmer_channel)
    keep = skills.push(name="Keep", skill_md="# keep", tag="t")
    skill = skills.push(skill_md=MD_1, tag="stable", artifact=_zip(**{"SKILL.md": MD_1}))
    skills.push(skill_md=MD_2, tag="beta")
    before = raw_keys(stigmer_app.store)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", MD_1)
        archive.writestr("zeros.bin", b"\0" * (8 << 20))
    error = _code(skills.push, skill_md=MD_1, artifact=bomb.getvalue())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(error).violations] == ["artifact"]  # type: ignore[attr-defined]
    assert raw_keys(stigmer_app.store) == before

    mine = f"ver/skills/{skill.metadata.id}/".encode()
    assert len(raw_keys(stigmer_app.store, mine)) == 8  # 2 versions, 2 order entries, 2 tags, 1 blob, the count
    skills.commands.delete(skill_pb2.SkillId(value=skill.metadata.id), timeout=10)
    assert raw_keys(stigmer_app.store, mine) == []
    families = key_families(stigmer_app.store)
    assert families["o/skills"] == families["s/skills"] == 1
    assert families["ver/skills"] == 4  # the other skill's version, order entry, tag and count
    assert skills.resolve("t", slug="keep") == keep


def test_concurrent_pushes_each_make_one_version(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    skills = Skills(stigmer_channel)
    first = skills.push(name="Calculator", skill_md="# v-base")
    contents = [f"# v{i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        pushed = list(pool.map(lambda md: skills.push(name="Calculator", skill_md=md, tag=md[3:]), contents))
    assert {p.metadata.id for p in pushed} == {first.metadata.id}
    versions = skills.versions(first.metadata.id)
    assert versions[0].spec.skill_md == "# v-base"
    assert sorted(v.spec.skill_md for v in versions[1:]) == sorted(contents)
    head = skills.queries.get(skill_pb2.SkillId(value=first.metadata.id), timeout=10)
    assert head.metadata.version.id in {v.metadata.version.id for v in versions}
    for md in contents:
        assert skills.resolve(md[3:]).spec.skill_md == md
    prefix = f"ver/skills/{first.metadata.id}/".encode()
    assert len(raw_keys(stigmer_app.store, prefix + b"n/")) == len(versions) == 13


def test_a_page_of_large_versions_ends_within_the_page_limit_and_its_token_is_sealed(
    stigmer_app: Any, stigmer_channel: grpc.Channel
) -> None:
    """Versions of about 2 MiB each: two on one page would pass gRPC's 4 MiB message limit, so
    the page ends before the version that would pass ``max_page_bytes`` (3 MiB), as a list does."""
    from stigmer_core.kind_client import KindClient

    client = KindClient(stigmer_channel, stigmer_app.registry.kind("Skill"))
    made: Any = None
    for char in ("\U0001F600", "\U0001F601", "\U0001F602"):
        doc = skill_pb2.Skill()
        doc.metadata.name = "big"
        for i in range(60):
            doc.metadata.annotations[f"a{i:02d}"] = char * 4096  # 16 KiB each
        doc.spec.skill_md = char * 262_144  # 1 MiB
        if made is not None:
            doc.metadata.id = made.metadata.id
        made = client.create(doc) if made is None else client.update(doc)
        assert made.ByteSize() > 2_000_000
    skills = Skills(stigmer_channel)
    pages: list[Any] = []
    token = ""
    while True:
        request = skill_pb2.ListSkillVersionsRequest(skill_id=made.metadata.id, page_size=10, page_token=token)
        pages.append(skills.queries.listVersions(request, timeout=30))
        token = pages[-1].next_page_token
        if not token:
            break
        sealed = token
    assert [len(p.entries) for p in pages] == [1, 1, 1]
    edited = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    tampered = skill_pb2.ListSkillVersionsRequest(skill_id=made.metadata.id, page_size=10, page_token=edited)
    assert _code(skills.queries.listVersions, tampered).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_missing_version_and_a_hash_like_tag_are_refused_saying_what_a_client_matches(
    stigmer_channel: grpc.Channel,
) -> None:
    """A version lookup's NOT_FOUND carried no ErrorInfo metadata, and a push's hash-like tag was
    refused naming the document's ``spec.tag`` where the request's field is ``tag``."""
    skills = Skills(stigmer_channel)
    made = skills.push(skill_md=MD_1, tag="stable")
    for missing in ("nightly", "0" * 64):
        error = from_rpc_error(_code(skills.resolve, missing))
        assert error.reason == "NOT_FOUND"
        assert error.metadata == {
            "kind": "Skill", "id": made.metadata.id, "slug": "calculator", "org": made.metadata.org, "version": missing,
        }  # fmt: skip
    for tag in ("a" * 64, "A" * 64):
        refused = from_rpc_error(_code(skills.push, skill_md=MD_2, tag=tag))
        assert [(v.field, v.description) for v in refused.violations] == [  # type: ignore[attr-defined]
            ("tag", "must not look like a version hash (64 hex digits)")
        ]
    assert [v.metadata.version.id for v in skills.versions(made.metadata.id)] == [made.metadata.version.id]
