"""Hypothesis strategies built from message descriptors and their rules.

A message strategy reads each field's ``buf.validate`` rules and draws
values that satisfy them, so the same strategy serves any kind a plugin
declares. Two layers make it right by construction:

- **Generated directly**: the rules a value can be built to satisfy (see
  ``DIRECT_RULES``): required, ignore, lengths, patterns, prefixes and
  suffixes, string formats (email, hostname, uri, uuid, ip, ulid, ...),
  const / in / not_in, numeric bounds, enum defined_only, repeated and map
  sizes, repeated unique, proto oneofs and ``(buf.validate.oneof).required``,
  message ``oneof`` rules, duration and timestamp bounds.
- **Drawn and checked**: every drawn message, at every nesting level, is
  then validated by protovalidate itself. One that fails (a message-level
  or field-level CEL rule, a predefined rule, a rule combination the direct
  layer cannot see) is redrawn, alternating sparse draws (optional fields
  set half the time) with dense ones (every optional field set, non-empty):
  "X is required when Y" rules hold for dense draws, "X and Y exclude each
  other" for sparse ones. A message type for which no draw has ever
  validated, after 25 examples of 8 draws each, raises ``Unsatisfiable``
  naming the rules the draws broke.

``invalid_specs`` breaks one declared rule of one field and names both the
field and the rule; protovalidate confirms each case before it is drawn.
Sizes are kept small: these are for behaviour, not load.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.pipeline import validation

_TEXT = string.ascii_letters + string.digits + " -_."
_SKIPPED_MESSAGES = {"google.protobuf.Any", "google.protobuf.Value", "google.protobuf.ListValue"}
MAX_TEXT = 24
MAX_ITEMS = 3
ATTEMPTS = 8
"""Draws of one message per example before the example is rejected."""
GIVE_UP_AFTER = 25
"""Rejected examples of a message type no draw has satisfied yet before it is declared unsatisfiable."""

F = FieldDescriptor
_RULES: Any = validate_pb2.field
_ONEOF_RULES: Any = validate_pb2.oneof
_MESSAGE_RULES: Any = validate_pb2.message
_IGNORE_ALWAYS = validate_pb2.IGNORE_ALWAYS
_IGNORE_IF_ZERO = validate_pb2.IGNORE_IF_ZERO_VALUE

DIRECT_RULES = (
    "required",
    "ignore",
    "string: const, len, min_len, max_len, len_bytes, min_bytes, max_bytes, pattern, prefix, suffix, contains, "
    "not_contains, in, not_in, email, hostname, ip, ipv4, ipv6, uri, uri_ref, address, uuid, tuuid, ulid, "
    "host_and_port, ip_prefix (and v4/v6), protobuf_fqn, protobuf_dot_fqn",
    "bytes: const, len, min_len, max_len, prefix, suffix, contains, in, not_in, ip, ipv4, ipv6, uuid",
    "numbers (every integer and float type): const, gt, gte, lt, lte, in, not_in, finite",
    "bool: const",
    "enum: const, defined_only, in, not_in",
    "repeated: min_items, max_items, unique, items",
    "map: min_pairs, max_pairs, keys, values",
    "oneof: one member or none, (buf.validate.oneof).required, (buf.validate.message).oneof",
    "duration: const, in, gt, gte, lt, lte; timestamp: const, gt, gte, lt, lte, gt_now, lt_now, within",
)
"""Rules the strategies generate for directly; everything else (CEL, predefined
rules, bytes patterns, duration not_in) is met by drawing and checking with
protovalidate. A string field's own CEL rules seed its draws with the string
literals of their expressions, so a rule such as ``this.startsWith('https://')``
is met by a draw, not waited for."""


def _rules(field: FieldDescriptor) -> Any:
    options = field.GetOptions()
    if options.HasExtension(_RULES):
        return options.Extensions[_RULES]
    return None


def constant(field: FieldDescriptor) -> str | None:
    """The value a string field's ``const`` rule fixes, or None when it fixes none."""
    rules = _rules(field)
    if rules is None or not _has(rules, "string") or not _has(rules.string, "const"):
        return None
    return str(rules.string.const)


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == F.LABEL_REPEATED)  # type: ignore[attr-defined, unused-ignore]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _real_oneof(field: FieldDescriptor) -> Any:
    """The field's oneof, unless it is the synthetic one of a proto3 ``optional``."""
    oneof: Any = field.containing_oneof
    if oneof is None or (len(oneof.fields) == 1 and oneof.name == "_" + field.name):
        return None
    return oneof


def violations(message: Message) -> list[tuple[str, str]]:
    """(field path, rule) of every rule ``message`` breaks, as protovalidate reports them.

    A rule is named by its path in the rules (``string.max_len``,
    ``repeated.unique``, ``required``), a CEL rule by its id.
    """
    found = []
    for found_violation in validation.ready()(message):
        v: Any = found_violation
        proto = v.proto
        field = validation.path_of(proto.field)
        rule = ".".join(e.field_name for e in proto.rule.elements) if proto.rule is not None else ""
        found.append((field, proto.rule_id if rule in ("", "cel", "cel_expression") else rule))
    return found


# -- scalar values --------------------------------------------------------------

# Formats are built from a few words, not from regexes: a draw is a handful
# of choices, and every value is valid under every definition of the format.
_WORDS = st.sampled_from(["a", "b1", "node", "api", "x-y", "stigmer", "k8s", "zeta"])
_hostnames = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_WORDS, min_size=1, max_size=2),
    st.sampled_from(["dev", "io", "com"]),
)
_emails = st.builds(lambda local, host: f"{local.replace('-', '.')}@{host}", _WORDS, _hostnames)
_paths = st.lists(_WORDS, max_size=2).map(lambda parts: "".join("/" + p for p in parts))
_uris = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}", st.sampled_from(["https", "http"]), _hostnames, _paths
)
_uuids = st.uuids().map(str)
_ulids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("01234567"),
    st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=25, max_size=25),
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_fqns = st.lists(_WORDS.map(lambda w: w.replace("-", "_").replace("1", "")), min_size=1, max_size=3).map(".".join)


def _networks(version: int | None) -> st.SearchStrategy[str]:
    v4 = st.integers(0, 8).map(lambda p: f"10.0.0.0/{p}")
    v6 = st.integers(0, 128).map(lambda p: f"::/{p}")
    return v4 if version == 4 else v6 if version == 6 else st.one_of(v4, v6)


_FORMATS: dict[str, st.SearchStrategy[str]] = {
    "email": _emails,
    "hostname": _hostnames,
    "ip": st.one_of(_ipv4, _ipv6),
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "uri": _uris,
    "uri_ref": st.one_of(_uris, _paths.filter(bool)),
    "address": st.one_of(_hostnames, _ipv4, _ipv6),
    "uuid": _uuids,
    "tuuid": _uuids.map(lambda u: u.replace("-", "")),
    "ulid": _ulids,
    "host_and_port": st.builds(lambda h, p: f"{h}:{p}", _hostnames, st.integers(1, 65535)),
    "ip_prefix": _networks(None),
    "ipv4_prefix": _networks(4),
    "ipv6_prefix": _networks(6),
    "ip_with_prefixlen": _networks(None),
    "ipv4_with_prefixlen": _networks(4),
    "ipv6_with_prefixlen": _networks(6),
    "protobuf_fqn": _fqns,
    "protobuf_dot_fqn": _fqns.map(lambda s: "." + s),
}


def _has(rules: Any, name: str) -> bool:
    return bool(rules.HasField(name))


_CEL_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


def _cel_literals(rules: Any) -> list[str]:
    """The string literals in a field's own CEL rules (``this.startsWith('https://')``)."""
    if rules is None:
        return []
    found = {a or b for rule in rules.cel for a, b in _CEL_LITERAL.findall(rule.expression)}
    return sorted(v for v in found if v)


def _string(rules: Any, *, dense: bool) -> st.SearchStrategy[str]:
    """Strings meeting the field's string rules; a field with CEL rules also gets
    draws built from their literals (whole, as a prefix, as a suffix), which
    protovalidate then checks: random text alone would hardly ever start with
    ``https://``."""
    base = _string_rules(rules, dense=dense)
    literals = _cel_literals(rules)
    if not literals:
        return base
    seeds = st.sampled_from(literals)
    tails = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
    seeded = st.one_of(
        seeds, st.builds(lambda a, b: a + b, seeds, tails), st.builds(lambda a, b: a + b, tails, seeds)
    )
    return st.one_of(seeded, base)


def _string_rules(rules: Any, *, dense: bool) -> st.SearchStrategy[str]:
    r = rules.string if rules is not None and _has(rules, "string") else None
    if r is None:
        return st.text(alphabet=_TEXT, min_size=1 if dense else 0, max_size=MAX_TEXT)
    if _has(r, "const"):
        return st.just(r.const)
    allowed = list(getattr(r, "in"))
    lo = max(r.min_len, r.min_bytes, r.len, r.len_bytes)
    hi_rules = [v for v in (r.max_len, r.max_bytes) if v] + [v for v in (r.len, r.len_bytes) if v]
    hi = min(hi_rules) if hi_rules else None
    if dense:
        lo = max(lo, 1)
    if allowed:
        base: st.SearchStrategy[str] = st.sampled_from(allowed)
    elif (fmt := r.WhichOneof("well_known")) in _FORMATS:
        base = _FORMATS[str(fmt)]
    elif r.pattern:
        base = st.from_regex(r.pattern, fullmatch=True)
    else:
        fixed = len(r.prefix) + len(r.suffix) + len(r.contains)
        room_hi = MAX_TEXT if hi is None else max(0, min(hi - fixed, MAX_TEXT))
        room_lo = min(max(0, lo - fixed), room_hi)
        base = st.text(alphabet=_TEXT, min_size=room_lo, max_size=max(room_lo, room_hi))
        if r.prefix or r.suffix or r.contains:
            base = base.map(lambda s: r.prefix + r.contains + s + r.suffix)

    def ok(value: str) -> bool:
        size = len(value.encode())
        return (
            lo <= len(value)
            and (hi is None or max(len(value), size) <= hi)
            and value.startswith(r.prefix)
            and value.endswith(r.suffix)
            and r.contains in value
            and (not r.not_contains or r.not_contains not in value)
            and value not in r.not_in
        )

    return base.filter(ok)


def _bytes(rules: Any, *, dense: bool) -> st.SearchStrategy[bytes]:
    r = rules.bytes if rules is not None and _has(rules, "bytes") else None
    if r is None:
        return st.binary(min_size=1 if dense else 0, max_size=16)
    if _has(r, "const"):
        return st.just(r.const)
    allowed = list(getattr(r, "in"))
    if allowed:
        return st.sampled_from(allowed)
    fmt = r.WhichOneof("well_known")
    if fmt in ("ip", "ipv4", "ipv6", "uuid"):
        size = {"ipv4": 4, "ipv6": 16, "uuid": 16}.get(str(fmt), 4)
        return st.binary(min_size=size, max_size=size)
    lo = max(r.min_len, r.len, 1 if dense else 0)
    hi = r.len or (r.max_len if _has(r, "max_len") else 16)
    fixed = len(r.prefix) + len(r.suffix) + len(r.contains)
    body = st.binary(min_size=max(0, lo - fixed), max_size=max(0, lo - fixed, min(hi, 16) - fixed))
    return body.map(lambda b: r.prefix + r.contains + b + r.suffix).filter(lambda b: b not in r.not_in)


_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}
_TYPE_RULES = {
    F.TYPE_INT32: "int32", F.TYPE_SINT32: "sint32", F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_INT64: "int64", F.TYPE_SINT64: "sint64", F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_UINT32: "uint32", F.TYPE_FIXED32: "fixed32", F.TYPE_UINT64: "uint64", F.TYPE_FIXED64: "fixed64",
    F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float",
}  # fmt: skip


def _number_rules(field: FieldDescriptor, rules: Any) -> Any:
    name = _TYPE_RULES[field.type]
    return getattr(rules, name) if rules is not None and _has(rules, name) else None


def _int(field: FieldDescriptor, rules: Any) -> st.SearchStrategy[int]:
    type_lo, type_hi = _INT_RANGES[_TYPE_RULES[field.type]]
    r = _number_rules(field, rules)
    lo, hi = max(type_lo, 0), min(type_hi, 1000)  # small non-negative values unless the rules say otherwise
    if r is None:
        return st.integers(lo, hi)
    if _has(r, "const"):
        return st.just(r.const)
    allowed = list(getattr(r, "in"))
    if allowed:
        return st.sampled_from(allowed)
    low = r.gte if _has(r, "gte") else r.gt + 1 if _has(r, "gt") else None
    high = r.lte if _has(r, "lte") else r.lt - 1 if _has(r, "lt") else None
    if low is not None and high is not None and low > high:  # an exclusive range: outside (high, low)
        values = st.one_of(st.integers(type_lo, high), st.integers(low, type_hi))
    else:
        lo = low if low is not None else (min(lo, high - 1000) if high is not None else lo)
        hi = high if high is not None else max(hi, lo + 1000)
        values = st.integers(max(lo, type_lo), min(hi, type_hi))
    excluded = set(r.not_in)
    return values.filter(lambda v: v not in excluded) if excluded else values


def _float(field: FieldDescriptor, rules: Any) -> st.SearchStrategy[float]:
    r = _number_rules(field, rules)
    width: Literal[32, 64] = 32 if field.type == F.TYPE_FLOAT else 64
    if r is None:
        return st.floats(allow_nan=False, allow_infinity=False, width=width)
    if _has(r, "const"):
        return st.just(r.const)
    allowed = list(getattr(r, "in"))
    if allowed:
        return st.sampled_from(allowed)
    low = r.gte if _has(r, "gte") else r.gt if _has(r, "gt") else None
    high = r.lte if _has(r, "lte") else r.lt if _has(r, "lt") else None
    if low is not None and high is not None and low > high:
        return st.one_of(st.floats(max_value=high, exclude_max=_has(r, "lt"), allow_nan=False, allow_infinity=False, width=width), st.floats(min_value=low, exclude_min=_has(r, "gt"), allow_nan=False, allow_infinity=False, width=width))  # fmt: skip
    values = st.floats(
        min_value=low, max_value=high, exclude_min=_has(r, "gt"), exclude_max=_has(r, "lt"),
        allow_nan=False, allow_infinity=False, width=width,
    )  # fmt: skip
    excluded = set(r.not_in)
    return values.filter(lambda v: v not in excluded) if excluded else values


UNDEFINED_ENUM_SPAN = 1000
"""How far past an enum's largest value the numbers it does not define are drawn from."""


def _enum(field: Any, rules: Any, *, required: bool) -> st.SearchStrategy[int] | None:
    """The numbers a client may send: the defined ones, and, unless ``defined_only`` (or ``in``,
    ``const``) rules them out, numbers the enum does not define, which proto3 lets any client
    send and the server stores as they are. A kind whose code takes every value for a name
    (``Color.Name(v)`` in an index) failed on the first such request while its contract passed."""
    defined = [v.number for v in field.enum_type.values]
    numbers, undefined = defined, not field.enum_type.is_closed if hasattr(field.enum_type, "is_closed") else True
    r = rules.enum if rules is not None and _has(rules, "enum") else None
    excluded: set[int] = set()
    if r is not None:
        if _has(r, "const"):
            return st.just(r.const)
        allowed = list(getattr(r, "in"))
        if allowed:
            numbers, undefined = allowed, False
        if r.defined_only:
            undefined = False
        excluded = set(r.not_in)
        numbers = [n for n in numbers if n not in excluded]
    if required:
        numbers = [n for n in numbers if n != 0]
    known = st.sampled_from(numbers) if numbers else None
    if not undefined:
        return known
    top = max(defined, default=0)
    others = st.integers(min_value=top + 1, max_value=top + UNDEFINED_ENUM_SPAN).filter(lambda n: n not in excluded)
    return others if known is None else st.one_of(known, known, known, others)


def _bool(rules: Any) -> st.SearchStrategy[bool]:
    if rules is not None and _has(rules, "bool") and _has(rules.bool, "const"):
        return st.just(rules.bool.const)
    return st.booleans()


def _value(field: Any, rules: Any, depth: int, *, dense: bool, required: bool = False) -> st.SearchStrategy[Any] | None:
    """Values of one (non-repeated) field, or an item of a repeated one, or a map key or value."""
    t = field.type
    if rules is not None and rules.ignore == _IGNORE_ALWAYS:
        rules = None
    if t == F.TYPE_STRING:
        return _string(rules, dense=dense or required)
    if t == F.TYPE_BYTES:
        return _bytes(rules, dense=dense or required)
    if t == F.TYPE_BOOL:
        return _bool(rules)
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return _float(field, rules)
    if t == F.TYPE_ENUM:
        return _enum(field, rules, required=required or dense)
    if t == F.TYPE_MESSAGE:
        if field.message_type.full_name in _SKIPPED_MESSAGES or depth <= 0:
            return None
        timed = _time(field.message_type, rules)
        return timed if timed is not None else messages(field.message_type, depth=depth - 1)
    return _int(field, rules)


_NANOS = 1_000_000_000
_DAY = 86_400 * _NANOS


def _nanos(value: Any) -> int:
    return int(value.seconds) * _NANOS + int(value.nanos)


def _time(desc: Any, rules: Any) -> st.SearchStrategy[Any] | None:
    """A Duration or Timestamp within its declared bounds (``*_now`` and ``within`` from the clock at draw time)."""
    name = {"google.protobuf.Duration": "duration", "google.protobuf.Timestamp": "timestamp"}.get(desc.full_name)
    if name is None or rules is None or not _has(rules, name):
        return None
    r = getattr(rules, name)
    cls = message_factory.GetMessageClass(desc)

    def build(total: int) -> Any:
        made: Any = cls()
        made.seconds, made.nanos = divmod(total, _NANOS)
        return made

    if _has(r, "const"):
        return st.just(r.const)
    if name == "duration" and list(getattr(r, "in")):
        return st.sampled_from(list(getattr(r, "in")))
    low = _nanos(r.gte) if _has(r, "gte") else _nanos(r.gt) + 1 if _has(r, "gt") else None
    high = _nanos(r.lte) if _has(r, "lte") else _nanos(r.lt) - 1 if _has(r, "lt") else None
    if name == "timestamp" and (r.gt_now or r.lt_now or _has(r, "within")):
        window = _nanos(r.within) if _has(r, "within") else 365 * _DAY
        margin = min(_DAY, window // 4)  # kept away from "now", which moves while a test runs
        if r.gt_now:
            start, end = margin, window - margin
        elif r.lt_now:
            start, end = margin - window, -margin
        else:
            start, end = margin - window, window - margin
        return st.integers(start, max(start, end)).map(lambda offset: build(time.time_ns() + offset))
    if low is not None and high is not None and low > high:
        return None  # an exclusive range: drawn, then filtered
    low = 0 if low is None else low
    high = low + 4_000_000_000 * _NANOS if high is None else high
    first, last = -(-low // _NANOS), high // _NANOS  # whole seconds within the bounds, when there are any
    if first <= last:
        return st.integers(first, last).map(lambda seconds: build(seconds * _NANOS))
    return st.integers(low, high).map(build)


def _must_set(field: Any, rules: Any) -> bool:
    """Whether leaving the field unset (its zero value) fails validation."""
    if rules is None or rules.ignore in (_IGNORE_ALWAYS, _IGNORE_IF_ZERO):
        return False
    if rules.required:
        return True
    if _is_map(field):
        return bool(_has(rules, "map") and rules.map.min_pairs > 0)
    if _is_repeated(field):
        return bool(_has(rules, "repeated") and rules.repeated.min_items > 0)
    if field.type == F.TYPE_MESSAGE:
        return False
    probe = message_factory.GetMessageClass(field.containing_type)()  # every field at its zero value
    return any(path == field.name for path, _ in violations(probe))


# -- messages ----------------------------------------------------------------------


class _Field(NamedTuple):
    field: Any
    must_set: bool
    sparse: st.SearchStrategy[Any]
    dense: st.SearchStrategy[Any]


def _field_values(field: Any, rules: Any, depth: int, *, dense: bool, must: bool) -> st.SearchStrategy[Any] | None:
    if rules is not None and rules.ignore == _IGNORE_ALWAYS:
        rules = None
    if _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        m = rules.map if rules is not None and _has(rules, "map") else None
        keys = _value(key_field, m.keys if m is not None and _has(m, "keys") else None, depth, dense=dense)
        values = _value(value_field, m.values if m is not None and _has(m, "values") else None, depth, dense=dense)
        if keys is None or values is None:
            return None
        lo = m.min_pairs if m is not None else 0
        hi = min(MAX_ITEMS, m.max_pairs) if m is not None and _has(m, "max_pairs") else MAX_ITEMS
        lo = max(lo, 1 if dense or must else 0)
        return st.dictionaries(keys, values, min_size=lo, max_size=max(lo, hi))
    if _is_repeated(field):
        rep = rules.repeated if rules is not None and _has(rules, "repeated") else None
        item_rules = rep.items if rep is not None and _has(rep, "items") else None
        items = _value(field, item_rules, depth, dense=dense)
        if items is None:
            return None
        lo = rep.min_items if rep is not None else 0
        hi = min(MAX_ITEMS, rep.max_items) if rep is not None and _has(rep, "max_items") else MAX_ITEMS
        lo = max(lo, 1 if dense or must else 0)
        unique = rep is not None and rep.unique and field.type != F.TYPE_MESSAGE
        return st.lists(items, min_size=lo, max_size=max(lo, hi), unique=unique)
    return _value(field, rules, depth, dense=dense, required=must)


def _assign(msg: Message, field: Any, value: Any) -> None:
    target = getattr(msg, field.name)
    if _is_map(field):
        message_values = field.message_type.fields_by_name["value"].type == F.TYPE_MESSAGE
        for k, v in value.items():
            if message_values:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif _is_repeated(field):
        target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


class _Plan:
    """How to draw one message type: per field, whether it must be set and its values.

    Built once per (type, depth), so a draw builds no strategies.
    """

    def __init__(self, desc: Any, depth: int) -> None:
        self.desc = desc
        self.cls = message_factory.GetMessageClass(desc)
        self.fields: list[_Field] = []
        self.oneofs: dict[str, tuple[bool, list[_Field]]] = {}
        self.exclusive: list[tuple[bool, list[str]]] = []
        self.rejected = 0
        self.satisfied = False
        for field in desc.fields:
            rules = _rules(field)
            must = _must_set(field, rules)
            sparse = _field_values(field, rules, depth, dense=False, must=must)
            dense = _field_values(field, rules, depth, dense=True, must=must)
            if sparse is None or dense is None:
                continue
            planned = _Field(field, must, sparse, dense)
            oneof = _real_oneof(field)
            if oneof is None:
                self.fields.append(planned)
                continue
            options = oneof.GetOptions()
            required = options.HasExtension(_ONEOF_RULES) and options.Extensions[_ONEOF_RULES].required
            self.oneofs.setdefault(oneof.name, (bool(required), []))[1].append(planned)
        options = desc.GetOptions()
        if options.HasExtension(_MESSAGE_RULES):
            for rule in options.Extensions[_MESSAGE_RULES].oneof:
                self.exclusive.append((bool(rule.required), list(rule.fields)))

    def raw(self, draw: st.DrawFn, dense: bool) -> Message:
        msg = self.cls()
        chosen: dict[str, bool] = {}  # message oneof rules: the one field each keeps
        keep: set[str] = set()
        for required, names in self.exclusive:
            options = names if required else [*names, ""]
            keep.add(draw(st.sampled_from(options)))
            chosen.update(dict.fromkeys(names, False))
        for planned in self.fields:
            name = planned.field.name
            if name in chosen and name not in keep:
                continue
            if not (planned.must_set or name in keep or dense or draw(st.booleans())):
                continue
            _assign(msg, planned.field, draw(planned.dense if dense else planned.sparse))
        for required, members in self.oneofs.values():
            pick = draw(st.sampled_from(members if required else [None, *members]))
            if pick is not None:
                _assign(msg, pick.field, draw(pick.dense if dense else pick.sparse))
        return msg


@functools.cache
def _plan(desc: Any, depth: int) -> _Plan:
    return _Plan(desc, depth)


@st.composite
def _special(draw: st.DrawFn, desc: Any) -> Message:
    msg: Any = message_factory.GetMessageClass(desc)()
    if desc.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        msg.seconds = draw(st.integers(min_value=0, max_value=4_000_000_000))
    else:  # google.protobuf.Struct
        for key in draw(
            st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), max_size=2, unique=True)
        ):
            msg.fields[key].string_value = draw(st.text(alphabet=_TEXT, max_size=8))
    return msg  # type: ignore[no-any-return]


_SPECIAL = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Struct"}


@st.composite
def _valid(draw: st.DrawFn, desc: Any, depth: int) -> Message:
    plan = _plan(desc, depth)
    broken: list[tuple[str, str]] = []
    for attempt in range(ATTEMPTS):
        msg = plan.raw(draw, dense=attempt % 2 == 1)
        broken = violations(msg)
        if not broken:
            plan.rejected, plan.satisfied = 0, True
            return msg
    plan.rejected += 1
    if not plan.satisfied and plan.rejected >= GIVE_UP_AFTER:  # never one valid draw: say why, and stop
        rules = ", ".join(sorted({f"{field or '(message)'}: {rule}" for field, rule in broken}))
        raise Unsatisfiable(f"no valid {desc.full_name} could be drawn; draws keep breaking {rules}")
    reject()


def messages(desc: Any, *, depth: int = 3) -> st.SearchStrategy[Message]:
    """Messages of type ``desc`` that protovalidate accepts (see the module docstring)."""
    if desc.full_name in _SPECIAL:
        return _special(desc)
    return _valid(desc, depth)


def spec_descriptor(kind: KindRuntime) -> Any:
    return kind.resource_cls.DESCRIPTOR.fields_by_name["spec"].message_type


def specs(kind: KindRuntime) -> st.SearchStrategy[Message | None]:
    """A valid spec for ``kind`` (None when the kind has no spec)."""
    if not kind.shape.has_spec:
        return st.none()
    return messages(spec_descriptor(kind))


SLUGS = ("alpha", "beta", "gamma", "delta-one")
ORGS = ("", "local", "acme")
LABEL_KEYS = ("tier", "team")
LABEL_VALUES = ("a", "b")

names = st.from_regex(r"[A-Za-z][A-Za-z0-9 ]{0,15}", fullmatch=True)
labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)
tags = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), max_size=2, unique=True)
"""Tags every metadata schema here accepts: the published one wants them unique."""


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


# -- breaking one rule -------------------------------------------------------------

MAX_BROKEN_LEN = 70_000
_NOT_MATCHING = ("!", "Not Valid!", "-", " ", "\n")


class Broken(NamedTuple):
    """A message that breaks exactly the named rule of the named field (and maybe rules that depend on it)."""

    field: str
    """The field path as violations name it (``spec.tools``)."""
    rule: str
    """The rule broken, as protovalidate's rule path (``repeated.unique``, ``string.email``, ``required``)."""
    message: Message


Breaker = Callable[[st.DrawFn, Message], None]
"""Changes one field of a valid message so that it breaks one rule."""


def _setter(field: Any, value: Any) -> Breaker:
    def apply(draw: st.DrawFn, msg: Message) -> None:
        msg.ClearField(field.name)
        _assign(msg, field, value)

    return apply


def _clear(field: Any) -> Breaker:
    def apply(draw: st.DrawFn, msg: Message) -> None:
        msg.ClearField(field.name)

    return apply


def _list_of(field: Any, items: st.SearchStrategy[Any], size: int, *, duplicate: bool = False) -> Breaker:
    def apply(draw: st.DrawFn, msg: Message) -> None:
        drawn = draw(st.lists(items, min_size=size, max_size=size))
        if duplicate:
            drawn[-1] = drawn[0]
        msg.ClearField(field.name)
        _assign(msg, field, drawn)

    return apply


def _scalar_breakers(field: Any, rules: Any) -> list[tuple[str, Breaker]]:
    found: list[tuple[str, Breaker]] = []
    zero_ignored = rules.ignore == _IGNORE_IF_ZERO
    t = field.type
    if t == F.TYPE_STRING and _has(rules, "string"):
        r = rules.string
        if _has(r, "max_len") and r.max_len < MAX_BROKEN_LEN:
            found.append(("string.max_len", _setter(field, "x" * (r.max_len + 1))))
        if r.min_len > (1 if zero_ignored else 0):
            found.append(("string.min_len", _setter(field, "x" * (r.min_len - 1))))
        if r.pattern:
            bad = [v for v in _NOT_MATCHING if re.fullmatch(r.pattern, v) is None]
            if bad:
                found.append(("string.pattern", _setter(field, bad[0])))
        fmt = r.WhichOneof("well_known")
        if fmt in _FORMATS:
            found.append((f"string.{fmt}", _setter(field, "not valid!")))
        allowed = list(getattr(r, "in"))
        if allowed:
            found.append(("string.in", _setter(field, max(allowed, key=len) + "x")))
        if r.not_in:
            found.append(("string.not_in", _setter(field, r.not_in[0])))
        if r.prefix and not r.prefix.startswith("!"):
            found.append(("string.prefix", _setter(field, "!")))
    elif t == F.TYPE_ENUM and _has(rules, "enum"):
        r = rules.enum
        defined = [v.number for v in field.enum_type.values]
        if r.defined_only:
            found.append(("enum.defined_only", _setter(field, max(defined) + 1)))
        allowed = list(getattr(r, "in"))
        if allowed and (outside := [n for n in defined if n not in allowed and n != 0]):
            found.append(("enum.in", _setter(field, outside[0])))
        if r.not_in and r.not_in[0] != 0:
            found.append(("enum.not_in", _setter(field, r.not_in[0])))
    elif t in _TYPE_RULES and (r := _number_rules(field, rules)) is not None:
        kind = _TYPE_RULES[t]
        lo, hi = _INT_RANGES.get(kind, (-(2**53), 2**53))
        for bound, delta in (("gte", -1), ("gt", 0), ("lte", 1), ("lt", 0)):
            if _has(r, bound):
                value = getattr(r, bound) + delta
                if lo <= value <= hi and not (zero_ignored and value == 0):
                    found.append((f"{kind}.{bound}", _setter(field, value)))
        if r.not_in:
            found.append((f"{kind}.not_in", _setter(field, r.not_in[0])))
    return found


def _field_breakers(field: Any, rules: Any, depth: int) -> list[tuple[str, Breaker]]:
    """Ways to break one declared rule of ``field``, each with the rule's name."""
    if rules is None or rules.ignore == _IGNORE_ALWAYS:
        return []
    found: list[tuple[str, Breaker]] = []
    if rules.required and rules.ignore != _IGNORE_IF_ZERO:
        found.append(("required", _clear(field)))
    if _is_map(field):
        m = rules.map if _has(rules, "map") else None
        if m is not None and _has(m, "max_pairs") and m.max_pairs < 64:
            items = _field_values(field, rules, depth, dense=True, must=True)
            keys = _value(
                field.message_type.fields_by_name["key"], m.keys if _has(m, "keys") else None, depth, dense=True
            )
            values = _value(field.message_type.fields_by_name["value"], m.values if _has(m, "values") else None, depth, dense=True)  # fmt: skip
            if items is not None and keys is not None and values is not None:
                pairs = st.dictionaries(keys, values, min_size=m.max_pairs + 1, max_size=m.max_pairs + 1)
                found.append(("map.max_pairs", _setter_from(field, pairs)))
        return found
    if _is_repeated(field):
        rep = rules.repeated if _has(rules, "repeated") else None
        if rep is None:
            return found
        items = _value(field, rep.items if _has(rep, "items") else None, depth, dense=True)
        if items is None:
            return found
        if _has(rep, "max_items") and rep.max_items < 64:
            found.append(("repeated.max_items", _list_of(field, items, rep.max_items + 1, duplicate=False)))
        if rep.min_items > (1 if rules.ignore == _IGNORE_IF_ZERO else 0):
            found.append(("repeated.min_items", _list_of(field, items, rep.min_items - 1)))
        if rep.unique and field.type != F.TYPE_MESSAGE and (not _has(rep, "max_items") or rep.max_items >= 2):
            found.append(("repeated.unique", _list_of(field, items, 2, duplicate=True)))
        return found
    return found + _scalar_breakers(field, rules)


def _setter_from(field: Any, values: st.SearchStrategy[Any]) -> Breaker:
    def apply(draw: st.DrawFn, msg: Message) -> None:
        msg.ClearField(field.name)
        _assign(msg, field, draw(values))

    return apply


def _breakers(desc: Any, prefix: str, depth: int) -> list[tuple[str, str, list[str], Breaker]]:
    """(field path, rule, parent path, breaker) for each breakable rule, nested messages included."""
    found: list[tuple[str, str, list[str], Breaker]] = []
    for field in desc.fields:
        rules = _rules(field)
        for rule, breaker in _field_breakers(field, rules, depth):
            found.append((f"{prefix}.{field.name}", rule, [], breaker))
        nested = field.message_type
        if (
            depth > 1 and nested is not None and not _is_repeated(field) and not _is_map(field)
            and nested.full_name not in _SPECIAL | _SKIPPED_MESSAGES
            and (rules is None or rules.ignore != _IGNORE_ALWAYS)
        ):  # fmt: skip
            for path, rule, parents, breaker in _breakers(nested, f"{prefix}.{field.name}", depth - 1):
                found.append((path, rule, [field.name, *parents], breaker))
    return found


@st.composite
def _invalid(
    draw: st.DrawFn, holder: type[Message], field: str, cases: list[tuple[str, str, list[str], Breaker]]
) -> Broken:
    desc = holder.DESCRIPTOR.fields_by_name[field].message_type
    for _ in range(ATTEMPTS):
        msg = draw(messages(desc))
        path, rule, parents, breaker = draw(st.sampled_from(cases))
        target: Any = msg
        for name in parents:
            target = getattr(target, name)
        breaker(draw, target)
        rooted = holder()
        getattr(rooted, field).CopyFrom(msg)  # so that violation paths start with the field
        if any(field == path and _same_rule(rule, broke) for field, broke in violations(rooted)):
            return Broken(path, rule, msg)
    reject()


def _same_rule(named: str, reported: str) -> bool:
    """protovalidate reports a two-sided bound (gte and lte) under one of its sides."""
    return named == reported or named.split(".")[0] == reported.split(".")[0] != "required"


def breakable(holder: type[Message], field: str) -> list[tuple[str, str]]:
    """(field path, rule) of every rule ``invalid_messages`` can break in ``holder``'s field ``field``."""
    desc = holder.DESCRIPTOR.fields_by_name[field].message_type
    return [(path, rule) for path, rule, _, _ in _breakers(desc, field, depth=2)]


def invalid_messages(
    holder: type[Message], field: str, *, only: tuple[str, str] | None = None
) -> st.SearchStrategy[Broken] | None:
    """``Broken`` messages for ``holder``'s message field ``field``, paths rooted at that field.

    None when the message declares no rule this can break (or not ``only``,
    a (field path, rule) pair of ``breakable``). Everything else is drawn
    valid, and protovalidate confirms that the named rule of the named field
    is broken before a case is drawn.
    """
    desc = holder.DESCRIPTOR.fields_by_name[field].message_type
    cases = [c for c in _breakers(desc, field, depth=2) if only is None or (c[0], c[1]) == only]
    if not cases:
        return None
    return _invalid(holder, field, cases)


def invalid_specs(kind: KindRuntime) -> st.SearchStrategy[Broken] | None:
    """``Broken`` specs of ``kind``: one field breaks one declared rule, the rest is valid.

    None when the kind has no spec or its spec declares no rule this can break.
    """
    if not kind.shape.has_spec:
        return None
    return invalid_messages(kind.resource_cls, "spec")
