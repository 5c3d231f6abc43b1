"""``org_removal.remove_org`` on every engine: what it refuses, and what it must not forget while
objects it cannot see are left. The command around it: tests/cli/test_org_delete.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from stigmer_core import Application, InvalidArgument
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.org_removal import count, remove_org
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from tests.gizmo_kind import GizmoPlugin
from tests.gizmo_kind import message as gizmo_message


def _opened(tmp_path: Path, store: str | None, *plugins: object) -> Application:
    pm = plugin_manager(plugins=list(plugins))
    return Application(build_registry(pm), open_store(store or tmp_path / "data", durable=False), pm)


def _history(app: Application, org: str) -> list[int]:
    with app.store.read() as txn:
        return sorted({r for r, _ in txn.events(0, [org])} - {r for r, _ in txn.events(0, [])})


def test_the_empty_org_is_refused_before_anything_is_deleted(tmp_path: Path, stigmer_store: str | None) -> None:
    """A list with no org lists every org: "" deleted every org's objects before it was refused."""
    with _opened(tmp_path, stigmer_store) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        agents.create(agent_pb2.Agent(metadata={"name": "kept", "org": "acme"}))
        with pytest.raises(InvalidArgument, match="no org named"):
            remove_org(app, "")
        assert count(app, "acme") == {"Agent": 1, "AgentInstance": 1}


def test_objects_of_a_kind_not_installed_keep_the_org_and_its_history(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """They cannot be listed here, but the org's usage counter counts them: its events are kept,
    and the command says what to do; with the plugin installed it removes them."""
    with _opened(tmp_path, stigmer_store, GizmoPlugin()) as app:
        gizmos = KindClient(app.channel(), app.registry.kind("Gizmo"))
        for name in ("one", "two"):
            gizmo = gizmo_message("Gizmo")()
            gizmo.metadata.name, gizmo.metadata.org = name, "gone"
            gizmos.create(gizmo)
        KindClient(app.channel(), app.registry.kind("Agent")).create(agent_pb2.Agent(metadata={"name": "a", "org": "gone"}))
    with _opened(tmp_path, stigmer_store) as app:  # no Gizmo plugin here
        removal = remove_org(app, "gone")
        assert removal.deleted == {"Agent": 1, "AgentInstance": 1} and removal.forgotten == 0
        [(what, reasons)] = removal.left.items()
        assert "not installed" in what and "2 objects" in reasons[0], removal.left
        assert _history(app, "gone")  # kept while the org holds anything
    with _opened(tmp_path, stigmer_store, GizmoPlugin()) as app:
        removal = remove_org(app, "gone")
        assert removal.deleted == {"Gizmo": 2} and not removal.left and removal.forgotten > 0
        assert _history(app, "gone") == []
