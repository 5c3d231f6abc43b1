"""Every Timestamp and Duration a request carries is one JSON can write.

protobuf stores any ``seconds`` and ``nanos``, but a Timestamp outside
0001-01-01 to 9999-12-31 UTC, or with ``nanos`` outside 0 to 999,999,999,
has no JSON form (RFC 3339), and neither has a Duration beyond ±315,576,000,000
seconds (about 10,000 years), with ``nanos`` beyond ±999,999,999, or with
``seconds`` and ``nanos`` of opposite signs; so every client reading the object
as JSON, and a YAML export of the whole store, would fail on it. The fields
that lead to one are found once per message type; a request walks only those,
and only where they are set.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.errors import InvalidArgument

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
EARLIEST = -62_135_596_800
"""0001-01-01T00:00:00Z in seconds since the epoch."""
LATEST = 253_402_300_799
"""9999-12-31T23:59:59Z."""
LONGEST = 315_576_000_000
"""The seconds of the longest Duration JSON writes, either way (protobuf's own bound)."""
_NANOS = 999_999_999

_Plan = tuple[tuple[str, str, "Descriptor | str"], ...]
"""(field name, "one" / "list" / "map", the message type to walk into, or the full name of the
time type the field holds)."""
_plans: dict[str, _Plan] = {}
_reaches: dict[str, bool] = {}
_TIMES = frozenset({TIMESTAMP, DURATION})


def _is_repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _leads_to_time(desc: Descriptor, visiting: frozenset[str] = frozenset()) -> bool:
    name = desc.full_name
    found = _reaches.get(name)
    if found is not None:
        return found
    if name in visiting:
        return False  # a cycle: what it reaches is decided where it started
    inner = visiting | {name}
    found = any(
        f.message_type is not None and (f.message_type.full_name in _TIMES or _leads_to_time(f.message_type, inner))
        for f in desc.fields
    )
    if not visiting:
        _reaches[name] = found
    return found


def _plan(desc: Any) -> _Plan:
    found = _plans.get(desc.full_name)
    if found is not None:
        return found
    steps: list[tuple[str, str, Any]] = []
    for field in desc.fields:
        sub = field.message_type
        if sub is None:
            continue
        shape = "list" if _is_repeated(field) else "one"
        if sub.GetOptions().map_entry:
            sub, shape = sub.fields_by_name["value"].message_type, "map"
            if sub is None:
                continue
        if sub.full_name in _TIMES:
            steps.append((field.name, shape, sub.full_name))
        elif _leads_to_time(sub):
            steps.append((field.name, shape, sub))
    plan = _plans[desc.full_name] = tuple(steps)
    return plan


def check(message: Message, path: str = "") -> None:
    """Raise InvalidArgument naming the first Timestamp or Duration of ``message`` JSON cannot write."""
    for name, shape, sub in _plan(message.DESCRIPTOR):
        if shape == "one":
            if message.HasField(name):
                _visit(getattr(message, name), sub, f"{path}{name}")
        elif shape == "list":
            for i, child in enumerate(getattr(message, name)):
                _visit(child, sub, f"{path}{name}[{i}]")
        else:
            for key, child in getattr(message, name).items():
                _visit(child, sub, f'{path}{name}["{key}"]')


def _visit(value: Any, sub: Descriptor | str, where: str) -> None:
    if not isinstance(sub, str):
        check(value, where + ".")
    elif sub == TIMESTAMP:
        if not (EARLIEST <= value.seconds <= LATEST and 0 <= value.nanos <= _NANOS):
            raise InvalidArgument.field(
                where,
                "must be a time from 0001-01-01 to 9999-12-31 UTC (nanos 0 to 999,999,999), as JSON can write it",
            )
    else:
        seconds, nanos = value.seconds, value.nanos
        if not (-LONGEST <= seconds <= LONGEST and -_NANOS <= nanos <= _NANOS) or seconds * nanos < 0:
            raise InvalidArgument.field(
                where,
                "must be a duration of at most 315,576,000,000 seconds either way (about 10,000 years), with "
                "nanos of at most 999,999,999 and of the seconds' sign, as JSON can write it",
            )
