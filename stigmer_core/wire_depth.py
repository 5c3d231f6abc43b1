"""Why a request did not parse, when the reason is its nesting.

protobuf stops parsing a message nested past ``PARSE_DEPTH`` levels with the
same error as for garbage bytes. A ``google.protobuf.Struct`` costs three
levels for each level of JSON (the Struct, its map entry, the Value), so a
client whose library parses deeper (Go's does) can build a valid request this
server cannot read; told only "error parsing", it cannot know why. This walk
of the bytes, guided by the message's descriptor, tells that case apart. It
runs only for a request that failed to parse, never on the normal path.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

PARSE_DEPTH = 100
"""protobuf's recursion limit (upb's and the pure-Python parser's default): the
message itself is not counted, every message inside it (a map entry too) is."""

FIELD_BUDGET = 10_000
"""Fields the walk reads at most before it gives up (the request is then only "not parseable"): it
holds the GIL, and an unbounded walk of a few MiB of one-byte fields took a second of the server's
CPU for each such request (this bound: under 20 ms). A request nested too deep is found long
before: its fields up to the nesting are few."""

_JSON_TYPES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


class _Garbage(Exception):
    """The bytes are not a message at all: the parse failed for another reason."""


def _repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 6.31+; ``label`` is deprecated there
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Garbage


def _deepest(
    data: bytes, start: int, end: int, desc: Any, depth: int, path: list[str], budget: list[int]
) -> list[str] | None:
    """The field path (down to where a Struct or other JSON type begins) of the first nesting past
    ``PARSE_DEPTH`` within ``data[start:end]``, a ``desc`` at ``depth``; None if there is none."""
    seen: dict[int, int] = {}
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Garbage
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Garbage
            field = desc.fields_by_number.get(number)
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                index = seen.get(number, 0)
                seen[number] = index + 1
                inner = path
                if desc.full_name not in _JSON_TYPES and not desc.GetOptions().map_entry:
                    repeated = _repeated(field) and not field.message_type.GetOptions().map_entry
                    inner = [*path, f"{field.name}[{index}]" if repeated else field.name]
                if depth + 1 > PARSE_DEPTH:
                    return inner
                found = _deepest(data, pos, pos + length, field.message_type, depth + 1, inner, budget)
                if found is not None:
                    return found
            pos += length
        else:  # groups (3, 4) are not used by any message served here; 6 and 7 do not exist
            raise _Garbage
    if pos != end:
        raise _Garbage
    return None


def too_deep(data: bytes, desc: Any) -> str | None:
    """Where ``data`` (a ``desc``) nests past ``PARSE_DEPTH`` (a field path, "" for the message itself), or None."""
    try:
        found = _deepest(data, 0, len(data), desc, 0, [], [FIELD_BUDGET])
    except (_Garbage, RecursionError):
        return None
    return None if found is None else ".".join(found).replace(".[", "[")
