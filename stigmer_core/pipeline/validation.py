"""Request validation against the protovalidate rules declared in the protos."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import FieldViolation, InvalidArgument
from stigmer_core.pipeline import times

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


_LENGTHS_ONLY = frozenset({"min_len", "max_len"})
_UNSEEN: Any = object()
_plain: dict[type[Message], tuple[tuple[str, int, int], ...] | None] = {}
"""Per request type, ``_length_rules`` of it, found on its first request."""


def _length_rules(descriptor: Any) -> tuple[tuple[str, int, int], ...] | None:
    """(field, min_len, max_len) of each rule of a message whose every rule is a length bound of
    a singular string field and which has nothing else (an id message, such as ``AgentId``);
    None for any other. protovalidate answers such a message in about 1.6 µs, most of a get's
    check, where comparing its lengths takes a tenth of that; a message that breaks a bound is
    still checked by protovalidate, which words the violation."""
    from stigmer_core.api.buf.validate import validate_pb2
    from stigmer_core.kinds.nesting import is_repeated

    if descriptor.GetOptions().ByteSize() or descriptor.oneofs or descriptor.extension_ranges:
        return None
    found = []
    for field in descriptor.fields:
        if field.type != field.TYPE_STRING or is_repeated(field):
            return None
        options = field.GetOptions()
        if not options.ByteSize():
            continue
        if not options.HasExtension(validate_pb2.field):
            return None
        given = options.Extensions[validate_pb2.field].string
        # The rules rebuilt from the two bounds alone must be the field's whole options: any
        # other rule or option, or one this code cannot read (unknown), leaves it to protovalidate.
        bounds = validate_pb2.StringRules()
        for name in _LENGTHS_ONLY:
            if given.HasField(name):
                setattr(bounds, name, getattr(given, name))
        alone = type(options)()
        alone.Extensions[validate_pb2.field].string.CopyFrom(bounds)
        if alone.SerializeToString(deterministic=True) != options.SerializeToString(deterministic=True):
            return None
        most = bounds.max_len if bounds.HasField("max_len") else 1 << 62
        found.append((field.name, bounds.min_len, most))
    return tuple(found)


def check(message: Message) -> None:
    """Raise InvalidArgument naming every field that breaks a declared rule, or a Timestamp
    or Duration JSON cannot write (``times``)."""
    lengths = _plain.get(type(message), _UNSEEN)
    if lengths is _UNSEEN:
        lengths = _plain[type(message)] = _length_rules(message.DESCRIPTOR)
    if lengths is not None:
        for name, least, most in lengths:
            if not least <= len(getattr(message, name)) <= most:
                break
        else:
            return  # strings only: no Timestamp or Duration either
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
