"""A kind package whose entry points are in a group spelt almost as `stigmer.kinds` is never
loaded, and nothing said so: `stigmer get gizmos` answered only "unknown kind"."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from stigmer_core.cli.catalog import Catalog
from stigmer_core.cli.errors import CliError


def _installed(site: Path, group: str) -> None:
    info = site / "acme_gizmo-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-gizmo\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\ngizmo = acme_gizmo.plugin\n")


@pytest.mark.parametrize("group", ["stigmer.kind", "stigmer_kinds"])
def test_an_unknown_kind_names_a_package_whose_entry_point_group_is_misspelt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str
) -> None:
    _installed(tmp_path, group)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    with pytest.raises(CliError) as refused:
        Catalog(()).kind("gizmos")
    said = refused.value.message
    assert f"acme-gizmo declares entry points in group '{group}', not 'stigmer.kinds'" in said, said


def test_an_unknown_kind_says_nothing_of_packages_in_other_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(tmp_path, "console_scripts")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    with pytest.raises(CliError) as refused:
        Catalog(()).kind("gizmos")
    assert "note:" not in refused.value.message
