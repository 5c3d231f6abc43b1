"""Request validation against the protovalidate rules declared in the protos."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import FieldViolation, InvalidArgument
from stigmer_core.pipeline import times
from stigmer_core.pipeline.plain_rules import Check, compile_rules

_collect: Callable[..., Any] | None = None
FULL_REPORT_BYTES = 16 << 10
"""A bad request larger than this is answered with its first violation only: collecting every
violation of a few MiB of repeated fields took seconds (each one a Python object)."""


def ready() -> Callable[..., Any]:
    """The validator, loaded on first use: protovalidate takes about 50 ms to import,
    which a command that only lists kinds should not pay. An Application calls this
    at start, so no request ever pays it."""
    global _collect
    if _collect is None:
        import protovalidate

        _collect = protovalidate.Validator().collect_violations
    return _collect


def path_of(field: Any) -> str:
    """The dotted path of a violation; empty for a rule of the message itself
    (a message-level CEL rule has no field path at all)."""
    if field is None:
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


_UNSEEN: Any = object()
_plain: dict[type[Message], Check | None] = {}
"""Per request type, its compiled rules (``plain_rules``), found on its first request."""


def check(message: Message) -> None:
    """Raise InvalidArgument naming every field that breaks a declared rule, or a Timestamp
    or Duration JSON cannot write (``times``)."""
    plain = _plain.get(type(message), _UNSEEN)
    if plain is _UNSEEN:
        plain = _plain[type(message)] = compile_rules(message.DESCRIPTOR)
    if plain is not None and plain(message):
        return  # its Timestamps and Durations too
    collect = _collect or ready()
    violations = collect(message, fail_fast=True)  # the one pass a valid request costs
    if not violations:
        times.check(message)
        return
    if message.ByteSize() <= FULL_REPORT_BYTES:  # every violation, for a request of ordinary size
        violations = collect(message)
    found = [
        FieldViolation(path_of(v.proto.field), v.proto.message or v.proto.rule_id or "breaks a rule")
        for v in violations
    ]
    summary = "; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in found[:5])
    raise InvalidArgument(f"invalid {message.DESCRIPTOR.name}: {summary}", found)


_METADATA = metadata_pb2.ApiResourceMetadata.DESCRIPTOR.full_name


@functools.cache
def _standard_metadata(resource_cls: type[Message]) -> bool:
    """Whether a kind's objects carry the standard metadata (whose label rules a selector is held
    to): looked up once per kind, not per request."""
    found = resource_cls.DESCRIPTOR.fields_by_name["metadata"].message_type
    return found is not None and found.full_name == _METADATA


def check_label_selector(kind: Any, labels: Mapping[str, str]) -> None:
    """Refuse a label selector (a list's or a watch's ``labels``) no object of ``kind`` can match:
    a key or value its metadata's own rules refuse (a typo, ``bad key!``) answered an empty list,
    or a watch that never sent anything, where it should say what is wrong."""
    if not labels or not _standard_metadata(kind.resource_cls):
        return
    try:
        check(metadata_pb2.ApiResourceMetadata(name="selector", labels=labels))
    except InvalidArgument as exc:
        shown = "; ".join(f"{v.field}: {v.description}" for v in exc.violations[:5])
        raise InvalidArgument(f"labels: no {kind.label} can have these labels ({shown})", exc.violations) from None
