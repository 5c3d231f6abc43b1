"""Encryption at rest for secret values (AES-GCM, one key per data directory).

The key is 32 random bytes in ``<data_dir>/secret.key``, created with mode
0600 the first time an application opens the directory. An application
without a data directory gets a key that lives only in memory, so nothing
it encrypts outlives it. Ciphertexts are ``enc:v1:<base64(nonce|ct|tag)>``;
the associated data binds each one to where it is stored, so a ciphertext
copied to another object or key does not decrypt.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stigmer_core import FailedPrecondition, hookimpl
from stigmer_core.kinds.runtime import Registry

KEY_FILE = "secret.key"
PREFIX = "enc:v1:"
EXTENSION = "stigmer.secrets"
REDACTED = "<redacted>"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        path = data_dir / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            if len(key) != 32:
                raise FailedPrecondition(f"{path} is not a 32-byte key") from None
            return cls(key)
        key = AESGCM.generate_key(bit_length=256)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return cls(key)

    @staticmethod
    def is_encrypted(value: str) -> bool:
        return value.startswith(PREFIX)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, context: str) -> str:
        if not token.startswith(PREFIX):
            raise FailedPrecondition("value is not encrypted")
        raw = base64.b64decode(token[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise FailedPrecondition("a secret value does not decrypt with this data directory's key") from None


def box(registry: Registry) -> SecretBox:
    found = registry.extensions.get(EXTENSION)
    if not isinstance(found, SecretBox):  # pragma: no cover - stigmer_configure always runs first
        raise FailedPrecondition("secrets are not configured for this application")
    return found


@hookimpl
def stigmer_configure(registry: Registry, data_dir: Path | None) -> None:
    registry.extensions[EXTENSION] = (
        SecretBox.for_data_dir(data_dir) if data_dir is not None else SecretBox(AESGCM.generate_key(bit_length=256))
    )
