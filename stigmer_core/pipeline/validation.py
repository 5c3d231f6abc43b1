"""Request validation against the protovalidate rules declared in the protos."""

from __future__ import annotations

import functools
import re
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


_PLAIN_RULES = ("min_len", "max_len", "pattern")
_UNSEEN: Any = object()
_PLAIN_PATTERN = re.compile(r"[\^$()\[\]\-?*+|.a-zA-Z0-9]*")
"""A pattern spelled with these alone, and none of ``_NOT_PLAIN`` (no escapes, named classes,
repeat counts, flags, named groups or possessive repeats), finds a match in an ASCII string
without a newline under Python's ``re`` exactly when it does under RE2, protovalidate's engine:
their dialects part only on what it leaves out (a backslash's digit class is Unicode to ``re``,
RE2's ``(?U)`` is not ``re``'s) and on newlines (``re``'s ``$`` matches before a final one)."""
_NOT_PLAIN = re.compile(r"\(\?|[*+?][*+]")
"""Of those, a group's flags and a repeat of a repeat: ``re`` reads ``a*+`` as possessive, RE2
refuses it."""
_plain: dict[type[Message], tuple[tuple[str, int, int, re.Pattern[str] | None], ...] | None] = {}
"""Per request type, ``_plain_rules`` of it, found on its first request."""


def _plain_rules(descriptor: Any) -> tuple[tuple[str, int, int, re.Pattern[str] | None], ...] | None:
    """(field, min_len, max_len, pattern) of each rule of a message whose every rule is a length
    bound or a plain pattern (``_PLAIN_PATTERN``) of a singular string field and which has nothing
    else (an id message such as ``AgentId``, a reference by org and slug); None for any other.
    protovalidate answers an id message in about 1.6 µs, where comparing its lengths takes a
    tenth of that, and a reference in 11 µs, where its lengths and patterns take 3 (on a slower
    machine); a message that breaks a rule, or whose strings the patterns cannot speak for (not
    ASCII, or holding a newline), is still checked by protovalidate, which words the violation."""
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
        # The rules rebuilt from the plain ones alone must be the field's whole options: any
        # other rule or option, or one this code cannot read (unknown), leaves it to protovalidate.
        plain = validate_pb2.StringRules()
        for name in _PLAIN_RULES:
            if given.HasField(name):
                setattr(plain, name, getattr(given, name))
        alone = type(options)()
        alone.Extensions[validate_pb2.field].string.CopyFrom(plain)
        if alone.SerializeToString(deterministic=True) != options.SerializeToString(deterministic=True):
            return None
        pattern = None
        if plain.HasField("pattern"):
            if _PLAIN_PATTERN.fullmatch(plain.pattern) is None or _NOT_PLAIN.search(plain.pattern):
                return None
            try:
                pattern = re.compile(plain.pattern)
            except re.error:
                return None
        most = plain.max_len if plain.HasField("max_len") else 1 << 62
        found.append((field.name, plain.min_len, most, pattern))
    return tuple(found)


def check(message: Message) -> None:
    """Raise InvalidArgument naming every field that breaks a declared rule, or a Timestamp
    or Duration JSON cannot write (``times``)."""
    rules = _plain.get(type(message), _UNSEEN)
    if rules is _UNSEEN:
        rules = _plain[type(message)] = _plain_rules(message.DESCRIPTOR)
    if rules is not None:
        for name, least, most, pattern in rules:
            value = getattr(message, name)
            if not least <= len(value) <= most:
                break
            if pattern is not None and (not value.isascii() or "\n" in value or pattern.search(value) is None):
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
