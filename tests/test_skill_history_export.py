"""A skill's history read for an export while a push lands: no tag is lost between the reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from stigmer_core import Application
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.kind_client import KindClient
from stigmer_plugins.skill_history import export_history


def _md(step: int) -> str:
    return f"---\nname: deploy\ndescription: Ships it.\n---\nStep {step}.\n"


def test_a_tag_moved_by_a_push_between_the_reads_stays_in_the_export(tmp_path: Path) -> None:
    """The versions were read before the tags: a push moving tag ``beta`` to a new version between
    the two reads left ``beta`` on a version the export did not hold, and the export dropped it, so
    the imported skill had no ``beta`` at all, though it named a version throughout."""
    with Application.open(tmp_path / "data") as app:
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        skills.call("push", skill_pb2.PushSkillRequest(skill_md=_md(1), tag="v1"))
        first: Any = skills.call("push", skill_pb2.PushSkillRequest(skill_md=_md(2), tag="beta"))
        read: list[str] = []

        def call(method: str, request: Message) -> Any:
            answer = skills.call(method, request)
            read.append(method)
            if len(read) == 1:  # another writer's push, between this export's first and second read
                skills.call("push", skill_pb2.PushSkillRequest(skill_md=_md(3), tag="beta"))
            return answer

        history = export_history(first, call)
        tagged = {tag: entry["version"] for entry in history for tag in entry.get("tags", ())}
        assert set(read[:2]) == {"listVersions", "listTags"}
        assert tagged.get("beta") == first.metadata.version.id, history
        assert len(history) == 3, history  # the pushed version too, untagged as it was when the tags were read
