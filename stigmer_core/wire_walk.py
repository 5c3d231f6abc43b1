"""Why a request did not parse, when the reason is its nesting or a string's bytes.

protobuf stops parsing a message nested past ``PARSE_DEPTH`` levels, or
holding a string field whose bytes are not UTF-8, with the same error as for
garbage bytes. A ``google.protobuf.Struct`` costs three levels for each level
of JSON (the Struct, its map entry, the Value), so a client whose library
parses deeper (Go's does) can build a valid request this server cannot read;
and a JavaScript client encodes a string cut inside a surrogate pair (half an
emoji, from a stream cut by index) into bytes no parser takes. Told only
"error parsing", neither can know why or where. This walk of the bytes,
guided by the message's descriptor, tells those cases apart and names the
field. It runs only for a request that failed to parse, never on the normal
path.
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


DEEP = "deep"
NOT_UTF8 = "not UTF-8"


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


def _fault(
    data: bytes, start: int, end: int, desc: Any, depth: int, path: list[str], budget: list[int]
) -> tuple[str, list[str]] | None:
    """What breaks first within ``data[start:end]``, a ``desc`` at ``depth``, and where: a nesting
    past ``PARSE_DEPTH`` (the field path down to where a Struct or other JSON type begins) or a
    string field that is not UTF-8; None if nothing does."""
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
                inner = _inner(desc, field, path, index)
                if depth + 1 > PARSE_DEPTH:
                    return DEEP, inner
                found = _fault(data, pos, pos + length, field.message_type, depth + 1, inner, budget)
                if found is not None:
                    return found
            elif field is not None and field.type == FieldDescriptor.TYPE_STRING:
                index = seen.get(number, 0)
                seen[number] = index + 1
                try:
                    data[pos : pos + length].decode()
                except UnicodeDecodeError:
                    return NOT_UTF8, _inner(desc, field, path, index)
            pos += length
        else:  # groups (3, 4) are not used by any message served here; 6 and 7 do not exist
            raise _Garbage
    if pos != end:
        raise _Garbage
    return None


def _inner(desc: Any, field: Any, path: list[str], index: int) -> list[str]:
    """The path of ``field`` of ``desc``: a map entry and the JSON types add no step of their own."""
    if desc.full_name in _JSON_TYPES or desc.GetOptions().map_entry:
        return path
    message = field.message_type
    repeated = _repeated(field) and not (message is not None and message.GetOptions().map_entry)
    return [*path, f"{field.name}[{index}]" if repeated else field.name]


def why_unparsed(data: bytes, desc: Any) -> tuple[str, str] | None:
    """(``DEEP`` or ``NOT_UTF8``, the field path: "" for the message itself) of what keeps
    ``data`` (a ``desc``) from parsing, or None when it is neither (garbage)."""
    try:
        found = _fault(data, 0, len(data), desc, 0, [], [FIELD_BUDGET])
    except (_Garbage, RecursionError):
        return None
    return None if found is None else (found[0], ".".join(found[1]).replace(".[", "["))


def too_deep(data: bytes, desc: Any) -> str | None:
    """Where ``data`` (a ``desc``) nests past ``PARSE_DEPTH`` (a field path, "" for the message itself), or None."""
    found = why_unparsed(data, desc)
    return found[1] if found is not None and found[0] == DEEP else None
