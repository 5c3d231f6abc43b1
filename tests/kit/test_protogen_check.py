"""``python -m stigmer_core.protogen`` run as a kind's author runs it: what it says when it fails."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stigmer_core.cli.commands.kind_new import scaffold

pytestmark = pytest.mark.skipif(
    # grpcio-tools needs protobuf < 7: the protobuf-7 pass of `make test` has no generator
    subprocess.run([sys.executable, "-c", "import grpc_tools"], capture_output=True, check=False).returncode != 0,
    reason="protogen's generator (grpcio-tools) is not installed here",
)


def _protogen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stigmer_core.protogen", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_check_names_each_drifted_file_by_a_path_that_opens(tmp_path: Path) -> None:
    """``differs: api/v1/gizmo_pb2.py`` named no file: the package directory was left out."""
    package = tmp_path / "doohickey"
    scaffold("Doohickey", package, package="doohickey_kind", id_prefix="dhk", key_prefix="doohickeys")
    assert _protogen(cwd=package).returncode == 0
    generated = package / "doohickey_kind" / "api" / "v1"
    drifted = generated / "doohickey_pb2.py"
    drifted.write_text(drifted.read_text() + "# edited\n")
    (generated / "doohickey_service_pb2.pyi").unlink()
    for cwd, args in ((package, ()), (tmp_path, ("--proto-path", "doohickey/proto", "--out", "doohickey"))):
        done = _protogen("--check", *args, cwd=cwd)
        assert done.returncode == 1, done.stderr
        differs = re.findall(r"^  differs: (\S+)$", done.stderr, re.MULTILINE)
        assert len(differs) == 1 and (cwd / differs[0]).samefile(drifted), done.stderr
        missing = re.findall(r"^  missing: (\S+)$", done.stderr, re.MULTILINE)
        assert missing == [str((generated / "doohickey_service_pb2.pyi").relative_to(cwd))], done.stderr
        # the command to fix it regenerates the tree it checked, not the defaults' from elsewhere
        assert done.stderr.strip().splitlines()[-1] == " ".join(
            ["regenerate with: python -m stigmer_core.protogen", *args]
        ), done.stderr


def test_a_message_python_cannot_name_is_said_so(tmp_path: Path) -> None:
    """A message named None failed in protogen's own parse of the stubs, as a bare SyntaxError."""
    proto = tmp_path / "proto" / "kw" / "v1"
    proto.mkdir(parents=True)
    (proto / "kw.proto").write_text(
        'syntax = "proto3";\npackage kw.v1;\nmessage None { string value = 1; }\n'
        "service Things { rpc get(None) returns (None); }\n"
    )
    done = _protogen(cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("protoc wrote kw/v1/kw_pb2_grpc.py, which is not Python"), done.stderr
    assert "named like a Python keyword (None, True, False)" in done.stderr, done.stderr
