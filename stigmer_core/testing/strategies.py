"""Hypothesis strategies built from message descriptors and their rules.

A message strategy reads each field's ``buf.validate.field`` rules (string
lengths and patterns, repeated and map sizes, numeric bounds, required) and
draws values that satisfy them, so the same strategy serves any kind a
plugin declares. Sizes are kept small: these are for behaviour, not load.
"""

from __future__ import annotations

import re
import string
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.kinds.runtime import KindRuntime

_TEXT = string.ascii_letters + string.digits + " -_."
_SKIPPED_MESSAGES = {"google.protobuf.Any", "google.protobuf.Value", "google.protobuf.ListValue"}
MAX_TEXT = 24
MAX_ITEMS = 3

F = FieldDescriptor


_RULES: Any = validate_pb2.field


def _rules(field: FieldDescriptor) -> Any:
    options = field.GetOptions()
    if options.HasExtension(_RULES):
        return options.Extensions[_RULES]
    return None


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == F.LABEL_REPEATED)  # type: ignore[attr-defined, unused-ignore]


def _default_breaks_rules(field: FieldDescriptor, rules: Any) -> bool:
    """Whether leaving the field unset would fail validation."""
    if rules is None:
        return False
    if rules.required:
        return True
    if _is_repeated(field):
        return bool(rules.HasField("repeated") and rules.repeated.min_items > 0)
    if rules.HasField("string"):
        r = rules.string
        return r.min_len > 0 or (bool(r.pattern) and re.fullmatch(r.pattern, "") is None)
    for kind in ("int32", "int64", "uint32", "uint64"):
        if rules.HasField(kind):
            r = getattr(rules, kind)
            return bool((r.HasField("gte") and r.gte > 0) or (r.HasField("gt") and r.gt >= 0))
    return False


def _string(rules: Any) -> st.SearchStrategy[str]:
    lo, hi, pattern = 0, MAX_TEXT, ""
    if rules is not None and rules.HasField("string"):
        s = rules.string
        lo = s.min_len if s.HasField("min_len") else 0
        hi = min(s.max_len, MAX_TEXT) if s.HasField("max_len") else MAX_TEXT
        hi = max(hi, lo)
        pattern = s.pattern
    if pattern:
        return st.from_regex(pattern, fullmatch=True).filter(lambda v: lo <= len(v) <= max(hi, lo))
    return st.text(alphabet=_TEXT, min_size=lo, max_size=hi)


def _int(rules: Any, field: FieldDescriptor) -> st.SearchStrategy[int]:
    lo, hi = 0, 1000
    if rules is not None:
        for kind in ("int32", "int64", "uint32", "uint64", "sint32", "sint64"):
            if rules.HasField(kind):
                r = getattr(rules, kind)
                if r.HasField("gte"):
                    lo = r.gte
                if r.HasField("lte"):
                    hi = r.lte
                if r.HasField("gt"):
                    lo = r.gt + 1
                if r.HasField("lt"):
                    hi = r.lt - 1
    return st.integers(min_value=lo, max_value=max(lo, hi))


def _scalar(field: Any, rules: Any, depth: int) -> st.SearchStrategy[Any] | None:
    t = field.type
    if t == F.TYPE_STRING:
        return _string(rules)
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_BYTES:
        return st.binary(max_size=16)
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if t == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if t == F.TYPE_MESSAGE:
        if field.message_type.full_name in _SKIPPED_MESSAGES or depth <= 0:
            return None
        return messages(field.message_type, depth=depth - 1)
    return _int(rules, field)


def _item_rules(rules: Any, which: str) -> Any:
    if rules is None or not rules.HasField(which.split(".")[0]):
        return None
    container, part = which.split(".")
    holder = getattr(rules, container)
    return getattr(holder, part) if holder.HasField(part) else None


@st.composite
def _message(draw: st.DrawFn, desc: Any, depth: int) -> Message:
    cls = message_factory.GetMessageClass(desc)
    msg = cls()
    if desc.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(st.integers(min_value=0, max_value=4_000_000_000))  # type: ignore[attr-defined]
        return msg
    if desc.full_name == "google.protobuf.Struct":
        for key in draw(
            st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), max_size=2, unique=True)
        ):
            msg.fields[key].string_value = draw(st.text(alphabet=_TEXT, max_size=8))  # type: ignore[attr-defined]
        return msg
    chosen_oneofs: set[str] = set()
    for field in desc.fields:
        rules = _rules(field)
        required = _default_breaks_rules(field, rules)
        if field.containing_oneof is not None:
            if field.containing_oneof.name in chosen_oneofs or not draw(st.booleans()):
                continue
            chosen_oneofs.add(field.containing_oneof.name)
        elif not required and not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            max_pairs = MAX_ITEMS
            if rules is not None and rules.HasField("map") and rules.map.HasField("max_pairs"):
                max_pairs = min(max_pairs, rules.map.max_pairs)
            keys = _scalar(key_field, _item_rules(rules, "map.keys"), depth)
            values = _scalar(value_field, _item_rules(rules, "map.values"), depth)
            if keys is None or values is None:
                continue
            pairs = draw(st.dictionaries(keys, values, max_size=max_pairs))
            target = getattr(msg, field.name)
            for k, v in pairs.items():
                if value_field.type == F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
            continue
        if _is_repeated(field):
            item_rules = _item_rules(rules, "repeated.items")
            items = _scalar(field, item_rules, depth)
            if items is None:
                continue
            max_items = MAX_ITEMS
            min_items = 0
            if rules is not None and rules.HasField("repeated"):
                if rules.repeated.HasField("max_items"):
                    max_items = min(max_items, rules.repeated.max_items)
                min_items = rules.repeated.min_items
            drawn_items = draw(st.lists(items, min_size=min_items, max_size=max(max_items, min_items)))
            getattr(msg, field.name).extend(drawn_items)
            continue
        value = _scalar(field, rules, depth)
        if value is None:
            continue
        drawn = draw(value)
        if field.type == F.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(drawn)
        else:
            setattr(msg, field.name, drawn)
    return msg


def messages(desc: Any, *, depth: int = 3) -> st.SearchStrategy[Message]:
    """Messages of type ``desc`` that satisfy its declared field rules."""
    return _message(desc, depth)


def specs(kind: KindRuntime) -> st.SearchStrategy[Message | None]:
    """A valid spec for ``kind`` (None when the kind has no spec)."""
    if not kind.shape.has_spec:
        return st.none()
    return messages(kind.resource_cls.DESCRIPTOR.fields_by_name["spec"].message_type)


SLUGS = ("alpha", "beta", "gamma", "delta-one")
ORGS = ("", "local", "acme")
LABEL_KEYS = ("tier", "team")
LABEL_VALUES = ("a", "b")

names = st.from_regex(r"[A-Za-z][A-Za-z0-9 ]{0,15}", fullmatch=True)
labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)
tags = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), max_size=2)


def invalid_metadata() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(field, metadata kwargs) pairs that break one rule of the metadata."""
    return st.one_of(
        st.just(("metadata.name", {"name": ""})),
        st.tuples(
            st.just("metadata.slug"),
            st.builds(lambda s: {"name": "x", "slug": s}, st.sampled_from(["Bad Slug", "-x", "x-", "UPPER"])),
        ),
        st.just(("metadata.name", {"name": "n" * 254})),
        st.just(("metadata.org", {"name": "x", "org": "Not An Org"})),
        st.just(('metadata.labels["bad key!"]', {"name": "x", "labels": {"bad key!": "v"}})),
    )


_NOT_MATCHING = ("!", "Not Valid!", "-", " ")
MAX_BROKEN_LEN = 70_000


def _breakers(field: Any) -> list[Any]:
    """Values that break one declared rule of a scalar field (none when no rule can be broken)."""
    rules = _rules(field)
    if rules is None or _is_repeated(field) or field.containing_oneof is not None:
        return []
    found: list[Any] = []
    if rules.HasField("string"):
        r = rules.string
        if r.HasField("max_len") and r.max_len < MAX_BROKEN_LEN:
            found.append("x" * (r.max_len + 1))
        if r.min_len > 0:
            found.append("")
        if r.pattern:
            found += [v for v in _NOT_MATCHING if re.fullmatch(r.pattern, v) is None][:1]
    for kind in ("int32", "int64", "uint32", "uint64"):
        if rules.HasField(kind):
            r = getattr(rules, kind)
            if r.HasField("gte") and r.gte > (0 if kind.startswith("u") else -(2**31)):
                found.append(r.gte - 1)
            if r.HasField("lte") and r.lte < 2**31 - 1:
                found.append(r.lte + 1)
    return found


@st.composite
def _invalid_spec(draw: st.DrawFn, kind: KindRuntime, breakable: list[tuple[Any, list[Any]]]) -> tuple[str, Message]:
    spec = draw(specs(kind))
    assert spec is not None
    field, values = draw(st.sampled_from(breakable))
    setattr(spec, field.name, draw(st.sampled_from(values)))
    return f"spec.{field.name}", spec


def invalid_specs(kind: KindRuntime) -> st.SearchStrategy[tuple[str, Message]] | None:
    """(field path, spec) pairs where one top-level spec field breaks a declared rule.

    None when the kind's spec declares no rule this can break. Everything
    else in the spec is drawn valid, so the field named is the one at fault.
    """
    if not kind.shape.has_spec:
        return None
    spec_desc: Any = kind.resource_cls.DESCRIPTOR.fields_by_name["spec"].message_type
    breakable = [(f, b) for f in spec_desc.fields if (b := _breakers(f))]
    if not breakable:
        return None
    return _invalid_spec(kind, breakable)
