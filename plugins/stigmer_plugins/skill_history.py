"""A skill's versions in an export, and their replay by import.

References pin a skill's version by tag or hash (an agent's ``skillRefs``), so a
skill moved to another store must keep every version, not only its current one.
An exported Skill document carries, beside ``spec`` (the current version), a
top-level ``history``: every stored version, oldest first, as ``version`` (its
hash), ``tags`` (the tags that resolve to it now, as ``listTags`` gives them) and, for every version but the
current one (whose content is the document's ``spec``), ``skillMd`` and
``artifact`` (its zip, base64, when it has one), and ``description`` where the
version's differs from the document's (each version keeps the description it
was written with). A skill whose only version is
its current one, tagged at most with ``spec.tag``, gets no ``history``.

A version's hash is the SHA-256 of its markdown and its zip's hash, so the same
markdown and zip written on any store make the same hash. Import replays, oldest
first, the versions the target lacks (and those whose tags resolve elsewhere
there) through the kind's own writes: ``apply`` makes the skill under its id,
``push`` every later version (only a push can leave a version without the zip
the one before had); then the document itself is applied, which makes its
version current again. A target that holds every version with its tags is not
written at all, so the document alone is applied and says unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any

import attrs
from google.protobuf.message import Message

from stigmer_core import InvalidArgument, NotFound
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.pipeline import validation
from stigmer_core.versioning import HASH, LATEST, frame
from stigmer_plugins import skill_artifact, skill_push

Call = Callable[[str, Message], Any]
FIELD = "history"
_KEYS = frozenset(("version", "tags", "skillMd", "artifact", "description"))


def version_of(skill_md: str, artifact: bytes) -> str:
    """The hash the server gives this content (``skill._content``), computed where the zip is at hand."""
    digest = hashlib.sha256(artifact).hexdigest() if artifact else ""
    return hashlib.sha256(frame(skill_md.encode(), digest.encode())).hexdigest()


def _pages(skill: Any, call: Call, method: str, field: str) -> list[Any]:
    """Every item of a paged per-skill query (``listVersions`` entries, ``listTags`` tags), in order."""
    found: list[Any] = []
    request = skill_pb2.ListSkillVersionsRequest(skill_id=skill.metadata.id, page_size=1000)
    while True:
        page: Any = call(method, request)
        found.extend(getattr(page, field))
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def contradicted(skill: Any, call: Call, current_zip: bytes) -> list[str]:
    """The versions of ``skill`` whose skillMd differs from the SKILL.md at the root of their zip,
    as notes: releases before the check stored such a version from a document without a zip, and
    neither a push nor an import takes one, so an export holding it cannot be imported. Said, so
    a backup is never silently unrestorable; the zips are read only for a skill with a history."""
    zips: dict[str, bytes] = {}
    key = skill.status.artifact_storage_key
    if key:
        zips[key] = current_zip
    versions = _pages(skill, call, "listVersions", "entries") if skill.metadata.version.previous_version_id else [skill]
    found = []
    for version in versions:
        key = version.status.artifact_storage_key
        if not key:
            continue
        if key not in zips:
            got: Any = call("getArtifact", skill_pb2.GetArtifactRequest(artifact_storage_key=key))
            zips[key] = bytes(got.artifact)
        try:
            inner = skill_artifact.inspect(zips[key]).skill_md
        except InvalidArgument:
            continue  # a zip the store took was inspected then; nothing this check can add
        if inner is not None and inner != version.spec.skill_md:
            found.append(
                f"version {version.metadata.version.id[:12]}: its skillMd differs from the SKILL.md in its zip "
                "(stored before such writes were refused), and no import takes that version: delete its entry "
                "from the document's history (a reference pinning it then names nothing); if it is the current "
                "one, first push the markdown again with a zip that holds it (or none), and export again"
            )
    return found


def _reference(skill: Any, version: str) -> metadata_pb2.ApiResourceReference:
    meta = skill.metadata
    return metadata_pb2.ApiResourceReference(
        org=meta.org, id=meta.id, slug="" if meta.id else meta.slug, version=version
    )


def _resolved(skill: Any, call: Call, version: str) -> str | None:
    """The hash ``version`` (a tag or a hash) resolves to, None where the skill has none such."""
    try:
        found: Any = call("getByReference", _reference(skill, version))
    except NotFound:
        return None
    return str(found.metadata.version.id)


def export_history(obj: Message, call: Call) -> list[dict[str, Any]]:
    """The ``history`` of an exported skill (see the module docstring); empty when the document alone says it all."""
    skill: Any = obj
    current = skill.metadata.version.id
    # Tags first: versions are never removed, so every version a tag names is in the list read
    # after it, even when a push moves the tag in between (read the other way, the moved tag named
    # a version the list did not have, and the export lost it).
    tags: dict[str, list[str]] = {}
    for found in _pages(skill, call, "listTags", "tags"):
        tags.setdefault(found.version_hash, []).append(found.tag)
    versions = _pages(skill, call, "listVersions", "entries")
    if [v.metadata.version.id for v in versions] == [current] and set(tags.get(current, ())) <= {skill.spec.tag}:
        return []
    zips: dict[str, str] = {}
    history: list[dict[str, Any]] = []
    for version in versions:
        digest = version.metadata.version.id
        entry: dict[str, Any] = {"version": digest}
        if tags.get(digest):
            entry["tags"] = tags[digest]
        if digest != current:
            entry["skillMd"] = version.spec.skill_md
            key = version.status.artifact_storage_key
            if key and key not in zips:
                got: Any = call("getArtifact", skill_pb2.GetArtifactRequest(artifact_storage_key=key))
                zips[key] = base64.b64encode(got.artifact).decode()
            if key:
                entry["artifact"] = zips[key]
            if version.spec.description != skill.spec.description:
                entry["description"] = version.spec.description
        history.append(entry)
    return history


@attrs.frozen
class Version:
    """One checked ``history`` entry."""

    at: int
    digest: str
    tags: tuple[str, ...]
    skill_md: str
    artifact: bytes
    description: str


def _bad(where: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field(where, reason)


def _entry(i: int, data: Any, skill: Any, own: str) -> Version:
    where = f"{FIELD}[{i}]"
    if not isinstance(data, dict):
        raise _bad(where, "must be a mapping with version, tags, skillMd, artifact and description")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise _bad(
            f"{where}.{unknown[0]}",
            "unknown field (fields of a history entry: version, tags, skillMd, artifact, description)",
        )
    digest = data.get("version")
    if not isinstance(digest, str) or not HASH.match(digest):
        raise _bad(f"{where}.version", "must be a version hash (64 lowercase hex digits)")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise _bad(f"{where}.tags", "must be a list of tags")
    if "skillMd" not in data:
        for extra in ("artifact", "description"):
            if extra in data:
                raise _bad(f"{where}.{extra}", "is given without skillMd (the document's own version is its spec)")
        if digest != own:
            raise _bad(f"{where}.skillMd", "is required (only the document's own version may leave it out)")
        return Version(i, digest, tuple(tags), skill.spec.skill_md, bytes(skill.spec.artifact), skill.spec.description)
    description = data.get("description", skill.spec.description)
    if not isinstance(description, str):
        raise _bad(f"{where}.description", "must be the version's description, a string")
    skill_md, text = data.get("skillMd"), data.get("artifact", "")
    if not isinstance(skill_md, str) or not skill_md:
        raise _bad(f"{where}.skillMd", "must be the version's SKILL.md text")
    try:
        artifact = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        artifact = None
    if artifact is None:
        raise _bad(f"{where}.artifact", "must be the version's zip, base64")
    if version_of(skill_md, artifact) != digest:
        raise _bad(f"{where}.version", "is not the hash of the entry's skillMd and artifact")
    version = Version(i, digest, tuple(tags), skill_md, artifact, description)
    _writable(version, where)
    return version


_PUSH_FIELDS = {"skill_md": "skillMd", "artifact": "artifact", "tag": "tags", "description": "description"}


def _writable(v: Version, where: str, tag_field: str = "tags") -> None:
    """Refuse, before anything is written, what the push replaying ``v`` would refuse (its
    declared rules, then its own checks of tag and zip): a refusal midway left a skill with half
    its versions on the target."""
    for tag in v.tags or ("",):
        if tag == LATEST:
            raise _bad(f"{where}.{tag_field}", "'latest' names no tag: it is always the current version")
        push = skill_pb2.PushSkillRequest(
            slug="history", skill_md=v.skill_md, artifact=v.artifact, tag=tag, description=v.description
        )  # the slug only stands in for the document's: the checks below do not look at it
        try:
            validation.check(push)
            skill_push.plan(push)
        except InvalidArgument as exc:
            first = exc.violations[0]
            field = _PUSH_FIELDS.get(first.field.split(".")[0], first.field)
            field = tag_field if field == "tags" else field
            raise _bad(f"{where}.{field}", first.description) from None


def parse(history: Any, skill: Any) -> list[Version]:
    """``history`` checked whole before anything is written: every hash agrees with its content,
    no version or tag is given twice."""
    if not isinstance(history, list):
        raise _bad(FIELD, "must be a list of versions, oldest first")
    own = version_of(skill.spec.skill_md, bytes(skill.spec.artifact))
    versions = [_entry(i, data, skill, own) for i, data in enumerate(history)]
    # the document itself is applied after the history is replayed: a refusal of it then left
    # the replayed versions on the target, and the import counted the skill as not written
    spec = skill.spec
    # a document's own "latest" is what a push takes it for, no tag: a skill pushed with it
    # stores it so, and its export came back refused (a history entry's tags are tags it held)
    tags = (spec.tag,) if spec.tag and spec.tag != LATEST else ()
    _writable(Version(-1, own, tags, spec.skill_md, bytes(spec.artifact), spec.description), "spec", "tag")
    seen: dict[str, int] = {}
    tagged: dict[str, int] = {}
    for v in versions:
        if v.digest in seen:
            raise _bad(f"{FIELD}[{v.at}].version", f"is given again (history[{seen[v.digest]}])")
        seen[v.digest] = v.at
        for tag in v.tags:
            if tag in tagged:
                raise _bad(f"{FIELD}[{v.at}].tags", f"tag '{tag}' is given again (history[{tagged[tag]}])")
            tagged[tag] = v.at
    return versions


def _needed(skill: Any, call: Call, versions: list[Version]) -> list[Version]:
    """The versions the target lacks, or holds with a tag resolving elsewhere."""
    return [
        v
        for v in versions
        if _resolved(skill, call, v.digest) is None or any(_resolved(skill, call, t) != v.digest for t in v.tags)
    ]


def replay_history(obj: Message, history: Any, call: Call) -> int:
    """Write the versions of ``history`` the target lacks, oldest first; the number of writes.

    The caller applies the document itself afterwards, which makes its version current."""
    skill: Any = obj
    versions = parse(history, skill)
    try:
        stored: Any = call("getByReference", _reference(skill, ""))
    except NotFound:
        stored = None
    needed = versions if stored is None else _needed(stored, call, versions)
    writes = 0
    for v in needed:
        for tag in v.tags or ("",):
            if stored is None:  # made under the document's id, with this version's content
                first: Any = type(skill)()
                first.CopyFrom(skill)
                first.spec.skill_md, first.spec.artifact, first.spec.tag = v.skill_md, v.artifact, tag
                first.spec.description = v.description
                stored = call("apply", first)
            else:
                stored = _write_version(call, stored, v.skill_md, v.artifact, tag, v.description)
            writes += 1
            if stored.metadata.version.id != v.digest:
                raise _bad(
                    f"{FIELD}[{v.at}].version",
                    f"writing the entry made version {stored.metadata.version.id} on this server, not {v.digest}",
                )
    own = version_of(skill.spec.skill_md, bytes(skill.spec.artifact))
    if stored is not None and stored.metadata.version.id != own and not skill.spec.artifact:
        # The document is applied next, and a write without a zip keeps the current version's:
        # after a version with a zip, the document's own zipless content became a version that
        # never existed, and its tag moved there. A push without a zip makes its version current.
        _write_version(call, stored, skill.spec.skill_md, b"", "", skill.spec.description)
        writes += 1
    return writes


def _write_version(call: Call, stored: Any, skill_md: str, artifact: bytes, tag: str, description: str) -> Any:
    """Make a version current on the server, with its own description: a push keeps the stored
    description when it is given none, so a version whose description is empty is applied over
    the stored skill instead (it took the version before's description, and the export of the
    imported history was not the one imported)."""
    if description or not stored.spec.description:
        return call("push", _push_to(stored, skill_md, artifact, tag, description))
    doc: Any = type(stored)()
    doc.CopyFrom(stored)
    doc.ClearField("status")
    doc.metadata.resource_version = 0
    doc.spec.skill_md, doc.spec.artifact, doc.spec.tag, doc.spec.description = skill_md, artifact, tag, ""
    return call("apply", doc)


def _push_to(stored: Any, skill_md: str, artifact: bytes, tag: str, description: str) -> skill_pb2.PushSkillRequest:
    meta = stored.metadata
    return skill_pb2.PushSkillRequest(
        org=meta.org, slug=meta.slug, name=meta.name, skill_md=skill_md, artifact=artifact, tag=tag,
        description=description,
    )  # fmt: skip
