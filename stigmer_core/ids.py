"""Resource ids: ``<id_prefix>-<lowercase ULID>``, as in Stigmer.

A ULID starts with its millisecond timestamp, so ids (and the object keys
built from them) sort by creation time and a plain key scan lists in order.
"""

from __future__ import annotations

import re

from ulid import ULID

_ULID_CHARS = "0123456789abcdefghjkmnpqrstvwxyz"
_ID = re.compile(rf"^[a-z][a-z0-9]{{0,15}}-[0-7][{_ULID_CHARS}]{{25}}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{str(ULID()).lower()}"


def is_valid_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "-") and _ID.match(value) is not None
