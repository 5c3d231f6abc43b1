"""Every Timestamp a request carries is a time JSON can write.

protobuf stores any ``seconds`` and ``nanos``, but a Timestamp outside
0001-01-01 to 9999-12-31 UTC, or with ``nanos`` outside 0 to 999,999,999,
has no JSON form (RFC 3339), so every client reading the object as JSON,
and a YAML export of the whole store, would fail on it. The fields that lead
to a Timestamp are found once per message type; a request walks only those,
and only where they are set.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.errors import InvalidArgument

TIMESTAMP = "google.protobuf.Timestamp"
EARLIEST = -62_135_596_800
"""0001-01-01T00:00:00Z in seconds since the epoch."""
LATEST = 253_402_300_799
"""9999-12-31T23:59:59Z."""

_Plan = tuple[tuple[str, str, "Descriptor | None"], ...]
"""(field name, "one" / "list" / "map", the message type to walk into; None: the field is a Timestamp)."""
_plans: dict[str, _Plan] = {}
_reaches: dict[str, bool] = {}


def _is_repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _leads_to_timestamp(desc: Descriptor, visiting: frozenset[str] = frozenset()) -> bool:
    name = desc.full_name
    found = _reaches.get(name)
    if found is not None:
        return found
    if name in visiting:
        return False  # a cycle: what it reaches is decided where it started
    inner = visiting | {name}
    found = any(
        f.message_type is not None
        and (f.message_type.full_name == TIMESTAMP or _leads_to_timestamp(f.message_type, inner))
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
        if sub.full_name == TIMESTAMP:
            steps.append((field.name, shape, None))
        elif _leads_to_timestamp(sub):
            steps.append((field.name, shape, sub))
    plan = _plans[desc.full_name] = tuple(steps)
    return plan


def check(message: Message, path: str = "") -> None:
    """Raise InvalidArgument naming the first Timestamp of ``message`` JSON cannot write."""
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


def _visit(value: Any, sub: Descriptor | None, where: str) -> None:
    if sub is not None:
        check(value, where + ".")
    elif not (EARLIEST <= value.seconds <= LATEST and 0 <= value.nanos <= 999_999_999):
        raise InvalidArgument.field(
            where, "must be a time from 0001-01-01 to 9999-12-31 UTC (nanos 0 to 999,999,999), as JSON can write it"
        )
