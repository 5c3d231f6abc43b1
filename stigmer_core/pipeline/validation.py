"""Request validation against the protovalidate rules declared in the protos."""

from __future__ import annotations

from typing import Any

import protovalidate
from google.protobuf.message import Message

from stigmer_core.errors import FieldViolation, InvalidArgument

_validator = protovalidate.Validator()


def _path(field: Any) -> str:
    if field is None:  # a message-level rule of the request itself names no field
        return ""
    parts: list[str] = []
    for element in field.elements:
        text = element.field_name
        sub = getattr(element, "subscript", None)
        if sub is not None:
            kind, value = getattr(sub, "field", None), getattr(sub, "value", None)
            if kind == "index":
                text += f"[{value}]"
            elif kind is not None:
                text += f'["{value}"]' if isinstance(value, str) else f"[{value}]"
        parts.append(text)
    return ".".join(parts)


def check(message: Message) -> None:
    """Raise InvalidArgument naming every field that breaks a declared rule."""
    violations = _validator.collect_violations(message)
    if not violations:
        return
    found = [FieldViolation(_path(v.proto.field) or "(message)", v.proto.message) for v in violations]
    summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
    raise InvalidArgument(f"invalid {message.DESCRIPTOR.name}: {summary}", found)
