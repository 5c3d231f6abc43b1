"""AES-256-GCM under one key, with the associated data naming where a value is stored.

A ciphertext is ``<prefix><base64(nonce|ct|tag)>``: ``enc:v1:`` under the
data-directory key, ``enc:r1:`` under a run key (``stigmer_plugins.secrets``).
The associated data binds each one to where it is stored, so a ciphertext
copied to another object or key does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from stigmer_core import FailedPrecondition
from stigmer_plugins.secret_key import KEY_FILE, read_key, write_key_file

PREFIX = "enc:v1:"
RUN_PREFIX = "enc:r1:"
NONCE = 12
KEY_BYTES = 32

if TYPE_CHECKING:  # imported when a box is made: every CLI command loads this plugin, few seal anything
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def new_key() -> bytes:
    """A fresh AES-256 key."""
    return os.urandom(KEY_BYTES)


def fingerprint(key: bytes) -> bytes:
    """Names a key without revealing it (recorded in the store, shown in messages)."""
    return hmac.new(key, b"stigmer secret key fingerprint", hashlib.sha256).digest()[:16]


class WrongKey(Exception):
    """A sealed value that does not open: another key sealed it, or it was sealed for another place.

    cryptography's ``InvalidTag`` under the box's own name, so that the modules catching it need
    not import cryptography, which a box imports when it is made.
    """


class SecretBox:
    """AES-GCM under one key, with the associated data naming where a value is stored."""

    def __init__(self, key: bytes, *, prefix: str = PREFIX) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(key)
        self._invalid_tag = InvalidTag
        self._prefix = prefix
        self.fingerprint = fingerprint(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        """The data directory's key file, created (durably) if it does not exist."""
        path = data_dir / KEY_FILE
        try:
            return cls(read_key(path))
        except FileNotFoundError:
            pass
        key = new_key()
        try:
            write_key_file(path, key)
        except FileExistsError:  # another process made it first: use theirs
            return cls(read_key(path))
        return cls(key)

    @staticmethod
    def is_encrypted(value: str) -> bool:
        """Whether ``value`` is a sealed value (under either kind of key)."""
        return value.startswith((PREFIX, RUN_PREFIX))

    def seal_bytes(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open_bytes(self, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], context)
        except self._invalid_tag:
            raise WrongKey("the sealed value does not open with this key in this place") from None

    def encrypt(self, plaintext: str, context: str) -> str:
        return self._prefix + base64.b64encode(self.seal_bytes(plaintext.encode(), context.encode())).decode()

    def decrypt(self, token: str, context: str) -> str:
        if not token.startswith(self._prefix):
            raise FailedPrecondition("value is not sealed with this key")
        try:
            raw = base64.b64decode(token[len(self._prefix) :], validate=True)
            return self.open_bytes(raw, context.encode()).decode()
        except (WrongKey, binascii.Error, ValueError):
            what = "this data directory's key" if self._prefix == PREFIX else "its run's key"
            raise FailedPrecondition(f"a secret value does not decrypt with {what}") from None


NO_SECRET_KEY = "NO_SECRET_KEY"
"""The reason of a refusal to seal or open a secret by an application holding no key."""


class LockedBox(SecretBox):
    """The data-directory key's place in an application opened read-only, which holds no key.

    Whatever is sealed stays sealed and nothing is sealed anew: both refuse with
    ``problem`` (what is wrong with the key), so a request that needs a secret
    answers FAILED_PRECONDITION naming it rather than a wrong or empty value.
    """

    def __init__(self, problem: str, why: str = "the store is opened read-only without its key") -> None:
        self._prefix = PREFIX  # no key, so nothing of SecretBox's own is made
        self.fingerprint = b""
        self.problem = problem
        self.why = why

    def _refused(self) -> FailedPrecondition:
        return FailedPrecondition(
            f"{self.problem}: no secret can be sealed or opened, {self.why}",
            reason=NO_SECRET_KEY,
        )

    def seal_bytes(self, plaintext: bytes, context: bytes) -> bytes:
        raise self._refused()

    def open_bytes(self, sealed: bytes, context: bytes) -> bytes:
        raise self._refused()
