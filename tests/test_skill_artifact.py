"""A pushed zip is bounded on every axis a zip bomb or a hostile archive uses."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from collections.abc import Callable

import grpc
import pytest

from stigmer_core import InvalidArgument, from_rpc_error
from stigmer_core.api.agentic.skill.v1 import service_pb2_grpc as skill_grpc
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_plugins import skill_artifact
from stigmer_plugins.skill_artifact import inspect

MD = "---\nname: tool\n---\n# Tool\n"


def _zip(write: Callable[[zipfile.ZipFile], None], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        write(archive)
    return buf.getvalue()


def _files(*names: str) -> bytes:
    def write(archive: zipfile.ZipFile) -> None:
        for name in names:
            archive.writestr(name, "x")

    return _zip(write)


def _patched(data: bytes, places: tuple[tuple[bytes, int], ...], value: int, fmt: str) -> bytes:
    """``data`` with a header field (after each signature, at an offset) set to ``value``."""
    patched = bytearray(data)
    for signature, offset in places:
        at = patched.index(signature) + offset
        patched[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(patched)


def _refused(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        inspect(data)
    assert [v.field for v in err.value.violations] == ["artifact"]
    assert reason in err.value.message, err.value.message


def test_a_plain_skill_zip_is_accepted() -> None:
    def write(archive: zipfile.ZipFile) -> None:
        archive.writestr("SKILL.md", MD)
        archive.writestr("tools/", "")
        archive.writestr("tools/run.py", "print('hi')\n" * 100)

    data = _zip(write)
    found = inspect(data)
    assert found.skill_md == MD and found.file_count == 2 and found.size_bytes == len(data)
    assert found.uncompressed_bytes == len(MD) + len("print('hi')\n") * 100


def test_high_compression_ratio_is_refused() -> None:
    _refused(_zip(lambda a: a.writestr("zeros.bin", b"\0" * (4 << 20))), "expands more than")


def test_total_uncompressed_size_is_bounded() -> None:
    # every entry is small enough for the ratio rule; together they are too big
    def write(archive: zipfile.ZipFile) -> None:
        for i in range(600):
            archive.writestr(f"part-{i}.bin", b"\0" * (64 << 10))

    _refused(_zip(write), "expands to more than")


def test_entry_count_is_bounded() -> None:
    _refused(_files(*(f"f{i}" for i in range(skill_artifact.MAX_ENTRIES + 1))), "entries; at most")


def test_compressed_size_is_bounded() -> None:
    _refused(b"\0" * (skill_artifact.MAX_ARTIFACT_BYTES + 1), "at most")


@pytest.mark.parametrize("name", ["../evil.sh", "/etc/passwd", "a/../../b", "C:/x", "a\\..\\b", "a//b", "./x"])
def test_paths_outside_the_unpack_directory_are_refused(name: str) -> None:
    _refused(_files(name), "entry")


def test_links_duplicates_encryption_and_other_methods_are_refused() -> None:
    def link(archive: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("tools/passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")

    _refused(_zip(link), "links are refused")
    with pytest.warns(UserWarning):
        _refused(_files("a.txt", "a.txt"), "appears twice")
    # one path twice: unpacked, one entry would replace the other
    _refused(_files("tools/", "tools"), "name one path")
    _refused(_files("Tools/run.sh", "tools/RUN.sh"), "name one path")
    _refused(_files("tools", "tools/run.sh"), "is a file, and entry 'tools/run.sh' is inside it")

    # zipfile cannot write encrypted entries: set the flag in both headers
    encrypted = _patched(_files("secret.txt"), ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)), 0x1, "<H")
    _refused(encrypted, "encrypted")
    _refused(_zip(lambda a: a.writestr("x.txt", "x" * 100), zipfile.ZIP_BZIP2), "compression method")


def test_garbage_and_lying_headers_are_refused() -> None:
    _refused(os.urandom(2048), "not a readable zip")
    honest = _zip(lambda a: a.writestr("big.txt", "abc" * 50_000))
    # claim 1000 bytes where 150,000 are: the bytes read then fail their CRC
    lying = _patched(honest, ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)), 1000, "<I")
    _refused(lying, "not a readable zip")


def test_push_refuses_a_bomb_naming_the_field(stigmer_channel: grpc.Channel) -> None:
    commands = skill_grpc.SkillCommandControllerStub(stigmer_channel)
    bomb = _zip(lambda a: a.writestr("zeros.bin", b"\0" * (16 << 20)))
    for artifact in (bomb, _files("../escape"), b"\0" * (skill_artifact.MAX_ARTIFACT_BYTES + 1)):
        with pytest.raises(grpc.RpcError) as err:
            commands.push(skill_pb2.PushSkillRequest(skill_md=MD, artifact=artifact), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in from_rpc_error(err.value).violations] == ["artifact"]  # type: ignore[attr-defined]
