"""The data-directory key on disk: where it comes from, written durably, replaced safely.

The key is 32 random bytes in ``<data_dir>/secret.key``, or in the file
``STIGMER_SECRET_KEY_FILE`` names, or (base64) in ``STIGMER_SECRET_KEY``. A
new key file is written and synced, file and directory, before anything is
sealed with it. A rotation stages the next key beside the current one
(``secret.key.new``) before its commit and installs it after, overwriting the
old key's bytes; a start that finds a staged key the store already names
finishes the installation.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import attrs

from stigmer_core import ReadableOnly
from stigmer_core.datadir import open_private

KEY_FILE = "secret.key"
KEY_ENV = "STIGMER_SECRET_KEY"
KEY_FILE_ENV = "STIGMER_SECRET_KEY_FILE"
STAGED_SUFFIX = ".new"
KEY_BYTES = 32


class SecretKeyError(ReadableOnly):
    """The key at hand does not open the secrets the store holds (missing, different, malformed).

    Nothing may be sealed or written then, but everything else can be read: an application
    opened ``read_only`` takes the store without the key (``secrets.Secrets.open``)."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, key: bytes, *, replace: bool = False) -> None:
    """Write ``key`` to ``path`` (0600) durably: the file and its directory entry are synced
    before this returns, so nothing is ever sealed with a key a crash could lose.

    Without ``replace`` an existing file is never overwritten (FileExistsError):
    two processes creating the first key race on ``link``, and one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{path} is not a {KEY_BYTES}-byte key ({len(key)} bytes)")
    return key


@attrs.frozen
class KeySource:
    """Where the data-directory key comes from."""

    path: Path | None
    """The key file (the data directory's, or ``STIGMER_SECRET_KEY_FILE``); None for the env var or memory."""
    env: bytes | None = None
    """The key given in ``STIGMER_SECRET_KEY``."""

    @property
    def where(self) -> str:
        if self.env is not None:
            return f"the key in ${KEY_ENV}"
        return f"the key file {self.path}" if self.path is not None else "an in-memory key"

    @classmethod
    def resolve(cls, data_dir: Path | None, environ: Mapping[str, str]) -> KeySource:
        given = environ.get(KEY_ENV, "").strip()
        if given:
            try:
                key = base64.b64decode(given, validate=True)
            except binascii.Error:
                raise SecretKeyError(f"${KEY_ENV} is not base64") from None
            if len(key) != KEY_BYTES:
                raise SecretKeyError(f"${KEY_ENV} must be {KEY_BYTES} bytes in base64 ({len(key)} given)")
            return cls(path=None, env=key)
        from_file = environ.get(KEY_FILE_ENV, "").strip()
        if from_file:
            return cls(path=Path(from_file).expanduser())
        return cls(path=None if data_dir is None else data_dir / KEY_FILE)

    @property
    def staged(self) -> Path | None:
        """Where a rotation stages the next key before its commit."""
        return None if self.path is None else self.path.with_name(self.path.name + STAGED_SUFFIX)


def install_staged(source: KeySource) -> None:
    """Make a committed rotation's staged key the key file.

    The old key's bytes are overwritten where they lie first: with it gone,
    old copies of values it sealed (freed store pages, the event log of an
    older version) can no longer be opened. A crash in between is safe: the
    staged key, which the store's fingerprint names, is installed first
    thing at the next start.
    """
    assert source.path is not None and source.staged is not None
    if source.path.exists():
        fd = os.open(source.path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(os.fstat(fd).st_size), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(source.staged, source.path)
    fsync_dir(source.path.parent)
