"""A distribution's name and version from its metadata's headers: what importlib's full parse says."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from stigmer_core.distributions import identity

BODY = "# A package\n\nName: not-this\nVersion: 9.9\n\n" + "A long description.\n" * 2000


def _dist(tmp_path: Path, text: str, file: str = "METADATA") -> importlib.metadata.Distribution:
    info = tmp_path / "demo_pkg-1.2.3.dist-info"
    info.mkdir()
    (info / file).write_bytes(text.encode())
    return importlib.metadata.PathDistribution(info)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_headers_alone_say_what_the_whole_file_does(tmp_path: Path, newline: str) -> None:
    headers = ["Metadata-Version: 2.4", "Name: Demo_Pkg", "Version: 1.2.3", "Summary: a demo", ""]
    dist = _dist(tmp_path, newline.join(headers) + newline + BODY.replace("\n", newline))
    assert identity(dist) == ("Demo_Pkg", "1.2.3") == (dist.metadata["Name"], dist.version)


def test_pkg_info_without_a_body(tmp_path: Path) -> None:
    dist = _dist(tmp_path, "Metadata-Version: 2.1\nName: demo\nVersion: 0.4\n", file="PKG-INFO")
    assert identity(dist) == ("demo", "0.4")


def test_a_header_the_head_lacks_is_read_as_importlib_reads_it(tmp_path: Path) -> None:
    """No Version header: importlib's own answer (None), not a guess of this module's."""
    dist = _dist(tmp_path, "Metadata-Version: 2.1\nName: demo\n\nbody\n")
    assert identity(dist) == ("demo", dist.version)


def test_every_installed_distribution() -> None:
    dists = list(importlib.metadata.distributions())
    assert any(identity(d)[0] == "stigmer-core" for d in dists)
    for dist in dists:
        assert identity(dist) == (dist.metadata["Name"] or "", dist.version)
