"""An owner reference may name its kind by any of the kind's names; it is stored by the kind's own.

One written `kind: agents` was stored so, and read back and exported so, where every other
reference and every object says `Agent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.kind_client import KindClient


def test_an_owner_named_by_plural_or_short_name_is_stored_by_its_kind_name(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    with Application.open(tmp_path, store=stigmer_store) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        agent: Any = agents.create(agent_pb2.Agent(metadata={"name": "owner"}, spec={"instructions": "x"}))
        for given in ("agents", "ag", "AGENT"):
            skill = skill_pb2.Skill(metadata={"name": f"owned by {given}"}, spec={"skill_md": "# x"})
            skill.metadata.owner_references.add(kind=given, id=agent.metadata.id)
            made: Any = skills.create(skill)
            assert [(r.kind, r.id) for r in made.metadata.owner_references] == [("Agent", agent.metadata.id)]
            stored: Any = skills.get(made.metadata.id)
            assert stored.metadata.owner_references[0].kind == "Agent"
        agents.delete(agent.metadata.id)
        assert list(skills.list_all()) == []  # each went with its owner


def test_an_owner_named_twice_or_an_object_owning_itself_is_refused(tmp_path: Path, stigmer_store: str | None) -> None:
    """Both were stored: two entries of one owner, and an object (its id chosen at create) in its own
    cascade."""
    import grpc
    import pytest

    from stigmer_core.ids import new_id

    with Application.open(tmp_path, store=stigmer_store) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        skills = KindClient(app.channel(), app.registry.kind("Skill"))
        agent: Any = agents.create(agent_pb2.Agent(metadata={"name": "owner"}, spec={"instructions": "x"}))
        twice = skill_pb2.Skill(metadata={"name": "twice"}, spec={"skill_md": "# x"})
        for _ in range(2):
            twice.metadata.owner_references.add(kind="Agent", id=agent.metadata.id)
        with pytest.raises(grpc.RpcError) as caught:
            skills.create(twice)
        assert "metadata.owner_references[1]: names the owner metadata.owner_references[0] names" in str(
            caught.value.details()
        )
        own = new_id("skl")
        itself = skill_pb2.Skill(metadata={"name": "itself", "id": own}, spec={"skill_md": "# x"})
        itself.metadata.owner_references.add(kind="Skill", id=own)
        with pytest.raises(grpc.RpcError) as caught:
            skills.create(itself)
        assert "metadata.owner_references[0].id: names the object itself" in str(caught.value.details())
        assert list(skills.list_all()) == []
