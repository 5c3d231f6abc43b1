"""A kind whose api_version changed: objects and backups written before still apply and import,
and their next write gives them the new one.

Objects keep the api_version they were written with, and so do their exports: after a change,
`get -o yaml | apply` and `import` of an older backup were refused (`apiVersion … is not X's`),
with no way to move the objects on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from stigmer_core import Application, KindDeclaration, hookimpl
from stigmer_core.cli.catalog import Catalog
from stigmer_core.cli.documents import Source, parse
from stigmer_core.cli.errors import CliError
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from tests.gizmo_kind import GIZMO

OLD, NEW = "gizmos.example.com/v1", "gizmos.example.com/v2"


def _app(path: Path, decl: KindDeclaration) -> Application:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    pm = plugin_manager(entry_points=False, plugins=[Plugin()])
    return Application(build_registry(pm), open_store(path, durable=False), pm)


def _document(api_version: str) -> Source:
    return Source("gizmo.yaml", f"apiVersion: {api_version}\nkind: Gizmo\nmetadata: {{name: Old one}}\nspec: {{}}\n")


def test_an_object_written_before_a_change_moves_to_the_new_api_version(tmp_path: Path) -> None:
    with _app(tmp_path / "data", attrs.evolve(GIZMO, api_version=OLD)) as app:
        gizmo: Any = GIZMO.resource()
        gizmo.metadata.name = "Old one"
        KindClient(app.channel(), app.registry.kind("Gizmo")).create(gizmo)
    moved = attrs.evolve(GIZMO, api_version=NEW, former_api_versions=(OLD,))
    with _app(tmp_path / "data", moved) as app:
        gizmos = KindClient(app.channel(), app.registry.kind("Gizmo"))
        stored: Any = gizmos.get_by_reference(slug="old-one")
        assert stored.api_version == OLD  # as written: objects are not rewritten at start
        catalog = Catalog.from_registry(app.registry)
        (document,) = parse(_document(OLD), catalog, org="local")
        assert document.kind.name == "Gizmo"
        with pytest.raises(CliError, match=r"apiVersion 'other\.example\.com/v1' is not Gizmo's"):
            parse(_document("other.example.com/v1"), catalog, org="local")
        # written back as read (what `get -o yaml | apply` does), it moves: a write stamps the kind's
        assert gizmos.update(stored).api_version == NEW
        assert gizmos.get(stored.metadata.id).api_version == NEW  # type: ignore[attr-defined]
