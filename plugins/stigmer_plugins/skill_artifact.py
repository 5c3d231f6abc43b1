"""Checks on a pushed skill zip, before anything is stored.

A zip is untrusted input that decompresses on the server, so it is bounded
on every axis a zip bomb or a hostile archive uses: its own size, the number
of entries, the total size once decompressed (counted while decompressing,
not taken from headers), the compression ratio of each large entry, and the
names (no absolute paths, ``..``, backslashes, drive letters, links,
duplicates, or two names of one path: a file and a directory, or letters
that differ only in case, which clash on a case-insensitive file system;
so unpacking it can only write below one directory, each entry once). Only
stored and deflated entries are accepted, and none may be encrypted.
Every failure is INVALID_ARGUMENT on the ``artifact`` field.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
import zlib

import attrs

from stigmer_core import InvalidArgument

MAX_ARTIFACT_BYTES = 3 << 20  # a push with its markdown still fits one 4 MiB gRPC message
MAX_UNCOMPRESSED_BYTES = 32 << 20
MAX_ENTRIES = 1000
MAX_RATIO = 100
RATIO_FLOOR = 64 << 10  # small entries may compress well without being a bomb
MAX_NAME = 255
SKILL_MD = "SKILL.md"
FIELD = "artifact"
_CHUNK = 64 << 10
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


@attrs.frozen
class Artifact:
    sha256: str
    size_bytes: int
    uncompressed_bytes: int
    file_count: int
    skill_md: str | None
    """The root SKILL.md, when the zip has one."""


def _bad(reason: str) -> InvalidArgument:
    return InvalidArgument.field(FIELD, reason)


def _check_name(name: str, seen: dict[str, str]) -> None:
    """``seen``: the names so far, by how a file system that ignores case names them."""
    shown = name[:80]
    if not name or len(name) > MAX_NAME or "\x00" in name:
        raise _bad(f"entry name {shown!r} is empty, too long or not text")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _bad(f"entry {shown!r} is not a relative path with '/' separators")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _bad(f"entry {shown!r} has an empty, '.' or '..' path component")
    key = name.rstrip("/").lower()
    other = seen.get(key)
    if other == name:
        raise _bad(f"entry {shown!r} appears twice")
    if other is not None:
        raise _bad(
            f"entries {other[:80]!r} and {shown!r} name one path (as a file and a directory, or in letters "
            "that differ only in case): unpacked, one would replace the other"
        )
    seen[key] = name


def _check_tree(seen: dict[str, str]) -> None:
    """No file's name is also a directory of another entry's path ('a' and 'a/b')."""
    for key, name in seen.items():
        parts = key.split("/")
        for depth in range(1, len(parts)):
            parent = seen.get("/".join(parts[:depth]))
            if parent is not None and not parent.endswith("/"):
                raise _bad(
                    f"entry {parent[:80]!r} is a file, and entry {name[:80]!r} is inside it as a directory: "
                    "unpacked, one would replace the other"
                )


def _check_entry(info: zipfile.ZipInfo) -> None:
    shown = info.filename[:80]
    if info.flag_bits & 0x1:
        raise _bad(f"entry {shown!r} is encrypted")
    if info.compress_type not in _METHODS:
        raise _bad(f"entry {shown!r} uses compression method {info.compress_type} (only stored and deflated)")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise _bad(f"entry {shown!r} is neither a file nor a directory (links are refused)")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise _bad(f"entry {shown!r} expands more than {MAX_RATIO}x")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes | int:
    """Decompress one entry, counting real bytes; the root SKILL.md is kept, others only counted."""
    keep = info.filename == SKILL_MD
    kept: list[bytes] = []
    total = 0
    with archive.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            total += len(chunk)
            if total > budget:
                raise _bad(f"expands to more than {MAX_UNCOMPRESSED_BYTES} bytes")
            if total > RATIO_FLOOR and total > MAX_RATIO * max(info.compress_size, 1):
                raise _bad(f"entry {info.filename[:80]!r} expands more than {MAX_RATIO}x")
            if keep:
                kept.append(chunk)
    return b"".join(kept) if keep else total


def inspect(data: bytes) -> Artifact:
    """Check ``data`` as a skill zip; raise InvalidArgument(artifact) on the first problem."""
    if len(data) > MAX_ARTIFACT_BYTES:
        raise _bad(f"is {len(data)} bytes; at most {MAX_ARTIFACT_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES:
                raise _bad(f"has {len(infos)} entries; at most {MAX_ENTRIES}")
            seen: dict[str, str] = {}
            declared = 0
            for info in infos:
                _check_name(info.filename, seen)
                _check_entry(info)
                declared += info.file_size
            _check_tree(seen)
            if declared > MAX_UNCOMPRESSED_BYTES:
                raise _bad(f"expands to more than {MAX_UNCOMPRESSED_BYTES} bytes")
            total, files, skill_md = 0, 0, None
            for info in infos:
                if info.is_dir():
                    continue
                files += 1
                got = _read(archive, info, MAX_UNCOMPRESSED_BYTES - total)
                if isinstance(got, bytes):
                    total += len(got)
                    skill_md = _text(got)
                else:
                    total += got
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise _bad(f"is not a readable zip ({type(exc).__name__}: {str(exc)[:120]})") from None
    return Artifact(hashlib.sha256(data).hexdigest(), len(data), total, files, skill_md)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{SKILL_MD} is not UTF-8 text") from None
