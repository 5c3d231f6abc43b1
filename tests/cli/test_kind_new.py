"""``stigmer kind new``: the package it writes installs with pip and passes its own tests, unedited.

The package is installed (built as a wheel, no network) into a throwaway
virtual environment layered on this one, and its tests (the contract on both
paths, a round trip through the generated stubs) run there, where the kind
is found through its entry point like any installed plugin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from .conftest import Stigmer

pytestmark = pytest.mark.timeout(600)
STEP_TIMEOUT = 300


def _layered_env(root: Path) -> str:
    venv.create(root, with_pip=False)
    python = str(root / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=STEP_TIMEOUT,
    ).stdout.strip()  # fmt: skip
    base = sysconfig.get_paths()["purelib"]
    (Path(site) / "_stigmer_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return python


def _run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=STEP_TIMEOUT, check=False)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_scaffold_installs_and_passes_its_own_tests(stigmer: Stigmer, tmp_path: Path) -> None:
    package = tmp_path / "gizmo"
    out = stigmer.ok("kind", "new", "GizmoBox", "--dir", str(package))
    assert "generated 6 files" in out, out
    assert (package / "proto" / "gizmo_box_kind" / "api" / "v1" / "service.proto").exists()
    python = _layered_env(tmp_path / "env")
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", "--no-deps")
    _run(*pip, "--no-build-isolation", "--no-index", str(package))
    _run(python, "-m", "stigmer_core.protogen", "--check", cwd=package)
    report = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=package)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", report)}
    # the contract on both paths (and engines) and the stub tests: none failed, and none skipped
    # unless STIGMER_TEST_ENGINES leaves an engine out on purpose
    assert counts.get("passed", 0) >= 4 and not counts.get("failed") and not counts.get("error"), report
    assert "skipped" not in counts or os.environ.get("STIGMER_TEST_ENGINES"), report


def test_names_and_prefixes_an_installed_kind_holds_are_refused(stigmer: Stigmer, tmp_path: Path) -> None:
    assert "already installed" in stigmer.fails("kind", "new", "Agent", "--dir", str(tmp_path / "a"))
    assert "used by kind Agent" in stigmer.fails(
        "kind", "new", "Gadget", "--id-prefix", "agt", "--dir", str(tmp_path / "b")
    )
    assert "CamelCase" in stigmer.fails("kind", "new", "not-a-kind", "--dir", str(tmp_path / "c"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
