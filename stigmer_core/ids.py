"""Resource ids: ``<id_prefix>-<lowercase ULID>``, as in Stigmer.

A ULID starts with its millisecond timestamp, so ids (and the object keys
built from them) sort by creation time and a plain key scan lists in order.
"""

from __future__ import annotations

import hashlib
import re

from ulid import ULID

_ULID_CHARS = "0123456789abcdefghjkmnpqrstvwxyz"
_ID = re.compile(rf"[a-z][a-z0-9]{{0,15}}-[0-7][{_ULID_CHARS}]{{25}}")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def new_id(prefix: str) -> str:
    return f"{prefix}-{str(ULID()).lower()}"


def is_valid_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "-") and _ID.fullmatch(value) is not None


def derived_id(prefix: str, owner_id: str, role: str) -> str:
    """The id of an object a kind creates for an owner (an agent's default instance).

    It keeps the owner's timestamp, so it sorts with the owner, and takes the
    rest from a hash of the owner's id and the object's role, so recreating
    the owner with its id (an import) recreates the same id, and whatever
    referred to the derived object still does.
    """
    owner_ulid = owner_id.rpartition("-")[2]
    digest = int.from_bytes(hashlib.sha256(f"{owner_id}/{role}".encode()).digest()[:10], "big")
    tail = "".join(_ULID_CHARS[(digest >> shift) & 31] for shift in range(75, -1, -5))
    return f"{prefix}-{owner_ulid[:10]}{tail}"


def slugify(name: str) -> str:
    """The slug a name stands for: lowercase words joined by dashes, at most 63 chars."""
    return _NOT_SLUG.sub("-", name.lower()).strip("-")[:63].rstrip("-")
