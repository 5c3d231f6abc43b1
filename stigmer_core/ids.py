"""Resource ids: ``<id_prefix>-<lowercase ULID>``, as in Stigmer.

A ULID starts with its millisecond timestamp, so ids (and the object keys
built from them) sort by creation time and a plain key scan lists in order.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time

_ULID_CHARS = "0123456789abcdefghjkmnpqrstvwxyz"
_ULID = re.compile(rf"[0-7][{_ULID_CHARS}]{{25}}")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_PAIRS = tuple(a + b for a in _ULID_CHARS for b in _ULID_CHARS)
"""Crockford base32 two characters at a time: ten bits per lookup, not five."""
_ULID_SHIFTS = tuple(range(120, -1, -10))
"""A 128-bit ULID in 26 characters (130 bits, the first two always zero), high bits first."""
_TAIL_SHIFTS = tuple(range(70, -1, -10))
"""The 80 random bits of a ULID in 16 characters."""


class _UlidClock:
    """ULIDs as integers, increasing within a millisecond, so ids made in one
    millisecond still sort in the order they were made.

    The ULID spec's monotonic generator adds one to the last id; here the step
    is random (up to 2**40), since ids of every org come from one clock and an
    id one more than a caller's own would name another org's object made in
    the same millisecond: guessable ids would let a caller probe, or take
    first, the ids of objects it cannot see."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()
        self._random = b""
        self._used = 0

    def next(self) -> int:
        millis = time.time_ns() // 1_000_000
        with self._lock:
            used = self._used
            if used + 10 > len(self._random):  # os.urandom in bulk: one system call per many ids
                self._random, used = os.urandom(_RANDOM_BATCH), 0
            self._used = used + 10
            fresh = millis << 80 | int.from_bytes(self._random[used : used + 10], "big")
            if fresh >> 80 <= self._last >> 80:  # the same millisecond (or the clock went back)
                fresh = self._last + 1 + (fresh & _STEP_MASK)
            self._last = fresh
        return fresh

    def forget_random(self) -> None:
        """A forked child draws its own bytes: never the parent's, which would repeat its ids."""
        self._lock = threading.Lock()
        self._random, self._used = b"", 0


_STEP_MASK = (1 << 40) - 1
"""A step within a millisecond takes 40 of the fresh id's random bits. Should the steps
carry into the time bits, ids still increase (they only look a millisecond newer)."""
_RANDOM_BATCH = 1280
"""Bytes of ``os.urandom`` read at a time: the random part of 128 ids."""
_CLOCK = _UlidClock()
os.register_at_fork(after_in_child=_CLOCK.forget_random)


def _base32(value: int, shifts: tuple[int, ...]) -> str:
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in shifts])


def _ulid_text(value: int) -> str:
    """``_base32(value, _ULID_SHIFTS)`` spelled out: every create makes one, and the loop costs twice this."""
    p = _PAIRS
    return "".join((
        p[value >> 120 & 0x3FF], p[value >> 110 & 0x3FF], p[value >> 100 & 0x3FF], p[value >> 90 & 0x3FF],
        p[value >> 80 & 0x3FF], p[value >> 70 & 0x3FF], p[value >> 60 & 0x3FF], p[value >> 50 & 0x3FF],
        p[value >> 40 & 0x3FF], p[value >> 30 & 0x3FF], p[value >> 20 & 0x3FF], p[value >> 10 & 0x3FF],
        p[value & 0x3FF],
    ))  # fmt: skip


def new_id(prefix: str) -> str:
    return f"{prefix}-{_ulid_text(_CLOCK.next())}"


def is_valid_id(value: str, prefix: str) -> bool:
    """Whether ``value`` is an id of the kind whose id prefix is ``prefix`` (any prefix the registry
    accepts: dashes and digits too, so the ULID is matched after it, not the whole id)."""
    return value.startswith(prefix + "-") and _ULID.fullmatch(value, len(prefix) + 1) is not None


def looks_like_id(value: str, prefix: str = "") -> bool:
    """Whether ``value`` is an id (of the kind whose id prefix is ``prefix``, when given) rather
    than a slug: how a NAME|ID argument or a reference written by hand is told apart."""
    if prefix:
        return is_valid_id(value, prefix)
    cut = len(value) - 26
    return cut > 1 and value[cut - 1] == "-" and _ULID.fullmatch(value, cut) is not None


def derived_id(prefix: str, owner_id: str, role: str) -> str:
    """The id of an object a kind creates for an owner (an agent's default instance).

    It keeps the owner's timestamp, so it sorts with the owner, and takes the
    rest from a hash of the owner's id and the object's role, so recreating
    the owner with its id (an import) recreates the same id, and whatever
    referred to the derived object still does.
    """
    owner_ulid = owner_id.rpartition("-")[2]
    digest = int.from_bytes(hashlib.sha256(f"{owner_id}/{role}".encode()).digest()[:10], "big")
    return f"{prefix}-{owner_ulid[:10]}{_base32(digest, _TAIL_SHIFTS)}"


def slugify(name: str) -> str:
    """The slug a name stands for: lowercase words joined by dashes, at most 63 chars."""
    return _NOT_SLUG.sub("-", name.lower()).strip("-")[:63].rstrip("-")


def unlike_id(slug: str) -> str:
    """``slug``, with the dash before a trailing ULID dropped when it has an id's shape: for a
    slug the server derives from free text (a session named after a message), which must not be
    refused for it. Slugs hold no double dash, so what is left ends in no ``-<ULID>``."""
    if not looks_like_id(slug):
        return slug
    cut = len(slug) - 26
    return slug[: cut - 1] + slug[cut:]
