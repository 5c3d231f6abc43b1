"""Page tokens bound to the query that issued them.

A list's ``next_page_token`` is opaque to clients but not free-form: it is
the position in the scanned range (and the org being paged) followed by an
HMAC over that position, the kind and the request's other fields. A token
replayed with another org, filter or kind, or edited, does not verify and is
refused with INVALID_ARGUMENT, so a page token never moves a scan into a
range its request would not have read.

The key is per store (kept under ``m/auth/page-key``), so tokens survive a
daemon restart and every server of a shared store accepts each other's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any

from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.store.protocol import Store, WriteTxn

KEY = b"m/auth/page-key"
EXTENSION = "stigmer.auth.pages"
MAC_BYTES = 16


def _ensure_key(txn: WriteTxn) -> bytes:
    found = txn.get(KEY)
    if found is not None and len(found) == 32:
        return found
    key = os.urandom(32)
    txn.put(KEY, key)
    return key


def store_key(store: Store, *, read_only: bool = False) -> bytes:
    """The store's page-token key, made on first use.

    ``read_only``: a store that has none keeps having none, and this application's
    tokens are good for as long as it runs (a read-only application writes nothing).
    """
    with store.read() as txn:
        found = txn.get(KEY)
    if found is not None and len(found) == 32:
        return found
    if read_only:
        return os.urandom(32)
    return store.transact(_ensure_key)


PAGE_TOKEN_INVALID = "PAGE_TOKEN_INVALID"
"""A page token refused: not one this query issued (edited, replayed with another org, filter or
kind, or from another store). A client starts the listing again from its first page."""


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def fingerprint(request: Message) -> bytes:
        """The request minus its paging fields: what a token is bound to besides the kind and org."""
        bare: Any = type(request)()
        bare.CopyFrom(request)
        bare.page_token = ""
        bare.page_size = 0
        if hasattr(bare, "org"):
            bare.org = ""  # bound separately: multi-org pages move from org to org
        return bytes(bare.SerializeToString(deterministic=True))

    def _mac(self, kind: str, fingerprint: bytes, payload: bytes) -> bytes:
        mac = hmac.new(self._key, kind.encode() + b"\0" + fingerprint + b"\0" + payload, hashlib.sha256)
        return mac.digest()[:MAC_BYTES]

    def seal(self, kind: str, fingerprint: bytes, org: str, inner: str) -> str:
        payload = org.encode() + b"\0" + inner.encode()
        raw = payload + self._mac(kind, fingerprint, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def open(self, kind: str, fingerprint: bytes, token: str) -> tuple[str, str]:
        """(org, position) of a token this query issued; INVALID_ARGUMENT for any other."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(kind, fingerprint, payload)):
            raise errors.InvalidArgument.field(
                "page_token",
                "is not a token this query returned (tokens are bound to the kind, org and filter)",
                reason=PAGE_TOKEN_INVALID,
            )
        org, _, inner = payload.partition(b"\0")
        return org.decode(), inner.decode()
