"""Two imports of one file at once, through two daemons, each said "created" of the objects the
other had made between its lookup and its apply: 1,211 "created" for 958 objects. An apply that
found nothing tells a create from an update of what another writer made by the answer's
timestamps: a create stamps one time as both."""

from __future__ import annotations

from pathlib import Path

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.cli.applying import _made_meanwhile
from stigmer_core.kind_client import KindClient


def test_an_apply_answering_an_object_made_before_it_is_not_a_create(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        agents = KindClient(app.channel(), agent_pb2.Agent)
        made = agents.apply(agent_pb2.Agent(metadata={"name": "bot"}, spec={"instructions": "one"}))
        assert not _made_meanwhile(made), "a create stamps one time as both"
        again = agents.apply(agent_pb2.Agent(metadata={"name": "bot"}, spec={"instructions": "two"}))
        assert _made_meanwhile(again), "an apply over what another writer made answers a later update time"
