"""Reading a data file as someone holding a copy of it would: every sealed-value candidate
in its bytes, tried with the keys at hand under every associated data a value could have."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from stigmer_plugins.secrets import SecretBox

CANDIDATE = re.compile(rb"enc:(?:v1|r1):([A-Za-z0-9+/]+={0,2})")


def candidates(raw: bytes) -> set[bytes]:
    """Every base64 run after an ``enc:`` prefix, and its shorter 4-aligned prefixes (the
    match may run into the bytes that follow the value)."""
    found: set[bytes] = set()
    for match in CANDIDATE.finditer(raw):
        text = match.group(1)
        for end in range(len(text) - len(text) % 4, 39, -4):
            try:
                found.add(base64.b64decode(text[:end], validate=True))
            except ValueError:
                continue
    return found


def opened(raw: bytes, boxes: Iterable[SecretBox], contexts: Iterable[str]) -> dict[str, str]:
    """Clear values (by associated data) that any candidate in ``raw`` yields under any key."""
    found: dict[str, str] = {}
    contexts = list(contexts)
    for sealed in candidates(raw):
        for secret_box in boxes:
            for context in contexts:
                try:
                    found[context] = secret_box.open_bytes(sealed, context.encode()).decode()
                except Exception:
                    continue
    return found
