"""protogen without its generator says which extra to install, instead of an ImportError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stigmer_core import protogen


def test_a_missing_generator_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proto").mkdir()
    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # an import of it now fails
    with pytest.raises(SystemExit) as stopped:
        protogen._protoc(["--version"])
    assert "stigmer-core[test,protogen]" in str(stopped.value)


def test_the_pinned_generator_is_the_one_installed_for_development() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("grpcio-tools")
    except PackageNotFoundError:
        # The protobuf-7 pass of `make test` runs in a venv of `[test]` alone: grpcio-tools 1.78.2
        # needs protobuf < 7, so a runtime-only venv cannot hold the generator at all.
        pytest.skip("grpcio-tools is not installed here (a runtime-only venv)")
    assert installed == protogen.GRPCIO_TOOLS
