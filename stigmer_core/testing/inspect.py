"""Looking at the raw store from tests: what keys exist, per family.

Cascade and rollback tests must prove that no orphan object, index or
ownership entry is left behind, which only the raw key space shows.
"""

from __future__ import annotations

import base64
from collections import Counter

from stigmer_core.auth import pages
from stigmer_core.store.protocol import Store


def raw_keys(store: Store, prefix: bytes = b"") -> list[bytes]:
    with store.read() as txn:
        return [key for key, _ in txn.scan(prefix)]


def key_families(store: Store) -> Counter[str]:
    """Key counts per family: ``o/agents``, ``s/agents``, ``x/agents``, ``r/<owner id>``, ``e``, ``m``."""
    counts: Counter[str] = Counter()
    for key in raw_keys(store):
        parts = key.split(b"/")
        family = parts[0].decode() if parts[0] in (b"e", b"m") else b"/".join(parts[:2]).decode()
        counts[family] += 1
    return counts


def page_token_key(token: str) -> bytes:
    """The store key a page token resumes after (unverified): which range served a list."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    inner = raw[: -pages.MAC_BYTES].partition(b"\0")[2]
    return base64.urlsafe_b64decode(inner + b"=" * (-len(inner) % 4))
