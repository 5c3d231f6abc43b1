"""A message type declaring (nearly) every rule protovalidate supports, built in code.

The strategies must draw only valid messages of it and break each of its
rules by name; building it from a FileDescriptorProto keeps the test free of
a generated module of its own.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.message import Message

from stigmer_core.api.buf.validate import validate_pb2 as v

FDP = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED
PACKAGE = "stigmer.kittest.v1"


def _field(message: Any, name: str, number: int, kind: int, label: int = OPTIONAL, type_name: str = "") -> Any:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"
    return field


def _rules(field: Any) -> Any:
    return field.options.Extensions[v.field]


def _build() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="stigmer_kittest/rules.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["buf/validate/validate.proto", "google/protobuf/duration.proto", "google/protobuf/timestamp.proto"],
    )
    transport = fdp.enum_type.add(name="Transport")
    for number, name in enumerate(["TRANSPORT_UNSPECIFIED", "STDIO", "HTTP", "SSE"]):
        transport.value.add(name=name, number=number)

    inner = fdp.message_type.add(name="Inner")
    _rules(_field(inner, "code", 1, FDP.TYPE_STRING)).string.pattern = "^[A-Z]{2,4}$"
    _rules(_field(inner, "weight", 2, FDP.TYPE_INT32)).int32.gt = 0

    rules = fdp.message_type.add(name="Rules")
    n = iter(range(1, 100))

    def string(name: str) -> Any:
        return _rules(_field(rules, name, next(n), FDP.TYPE_STRING)).string

    r = _rules(_field(rules, "transport", next(n), FDP.TYPE_ENUM, type_name="Transport"))
    r.required = True
    r.enum.defined_only = True
    getattr(_rules(_field(rules, "fallback", next(n), FDP.TYPE_ENUM, type_name="Transport")).enum, "in").extend(
        [0, 2, 3]
    )
    _rules(_field(rules, "not_sse", next(n), FDP.TYPE_ENUM, type_name="Transport")).enum.not_in.extend([3])
    r = _rules(_field(rules, "tools", next(n), FDP.TYPE_STRING, REPEATED))
    r.repeated.unique = True
    r.repeated.min_items = 1
    r.repeated.max_items = 4
    r.repeated.items.string.pattern = "^[a-z][a-z0-9_]{0,15}$"
    for fmt in (
        "email",
        "hostname",
        "uri",
        "uri_ref",
        "uuid",
        "tuuid",
        "ulid",
        "ipv4",
        "ipv6",
        "address",
        "host_and_port",
    ):
        setattr(string(fmt), fmt, True)
    string("code").pattern = "^[a-z]+-[0-9]{1,3}$"
    s = string("affixed")
    s.prefix, s.suffix, s.contains, s.max_len = "pre-", "-post", "mid", 20
    getattr(string("choice"), "in").extend(["red", "green", "blue"])
    string("not_admin").not_in.extend(["admin", "root"])
    string("fixed").len = 5
    s = string("bounded")
    s.min_len, s.max_len = 2, 8
    s = string("nickname")
    _rules(rules.field[-1]).ignore = v.IGNORE_IF_ZERO_VALUE
    s.min_len = 5
    s = string("legacy")
    _rules(rules.field[-1]).ignore = v.IGNORE_ALWAYS
    s.const = "never drawn this way"
    even = _rules(_field(rules, "even", next(n), FDP.TYPE_STRING)).cel.add()
    even.id, even.expression, even.message = "even_length", "size(this) % 2 == 0", "must have an even length"
    r = _rules(_field(rules, "port", next(n), FDP.TYPE_INT32)).int32
    r.gte, r.lte = 1, 65535
    r.not_in.extend([22])
    getattr(_rules(_field(rules, "level", next(n), FDP.TYPE_UINT64)).uint64, "in").extend([1, 2, 3])
    r = _rules(_field(rules, "ratio", next(n), FDP.TYPE_DOUBLE)).double
    r.gt, r.lt, r.finite = 0.0, 1.0, True
    _rules(_field(rules, "digest", next(n), FDP.TYPE_BYTES)).bytes.len = 4
    _rules(_field(rules, "enabled", next(n), FDP.TYPE_BOOL)).bool.const = True
    r = _rules(_field(rules, "inner", next(n), FDP.TYPE_MESSAGE, type_name="Inner"))
    r.required = True
    entry = rules.nested_type.add(name="EnvEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, FDP.TYPE_STRING)
    _field(entry, "value", 2, FDP.TYPE_STRING)
    r = _rules(_field(rules, "env", next(n), FDP.TYPE_MESSAGE, REPEATED, type_name="Rules.EnvEntry")).map
    r.max_pairs = 2
    r.keys.string.pattern = "^[A-Z_]+$"
    r.values.string.max_len = 10
    # A proto oneof that must be set.
    rules.oneof_decl.add(name="target").options.Extensions[v.oneof].required = True
    _field(rules, "path", next(n), FDP.TYPE_STRING).oneof_index = 0
    _rules(rules.field[-1]).string.min_len = 1
    _field(rules, "inline", next(n), FDP.TYPE_STRING).oneof_index = 0
    # Message-level rules: exclusive fields, and fields required by another's value.
    string("command").max_len = 32
    string("url").max_len = 64
    string("token").max_len = 16
    string("password").max_len = 16
    message_rules = rules.options.Extensions[v.message]
    exclusive = message_rules.oneof.add()
    exclusive.fields.extend(["token", "password"])
    for rule_id, expression, text in (
        ("command_for_stdio", "this.transport != 1 || this.command != ''", "command is required for STDIO"),
        ("url_for_http", "this.transport != 2 || this.url != ''", "url is required for HTTP"),
    ):
        cel = message_rules.cel.add()
        cel.id, cel.expression, cel.message = rule_id, expression, text

    # Durations and timestamps with bounds, including ones relative to now.
    timeout = _rules(_field(rules, "timeout", next(n), FDP.TYPE_MESSAGE))
    rules.field[-1].type_name = ".google.protobuf.Duration"
    timeout.duration.gte.seconds, timeout.duration.lte.seconds = 1, 30
    expires = _rules(_field(rules, "expires", next(n), FDP.TYPE_MESSAGE))
    rules.field[-1].type_name = ".google.protobuf.Timestamp"
    expires.timestamp.gt_now = True
    seen = _rules(_field(rules, "seen", next(n), FDP.TYPE_MESSAGE))
    rules.field[-1].type_name = ".google.protobuf.Timestamp"
    seen.timestamp.lt_now = True
    seen.timestamp.within.seconds = 3600

    holder = fdp.message_type.add(name="Holder")
    _field(holder, "spec", 1, FDP.TYPE_MESSAGE, type_name="Rules")
    return fdp


def _load() -> type[Message]:
    pool = descriptor_pool.Default()
    try:
        desc = pool.FindMessageTypeByName(f"{PACKAGE}.Holder")
    except KeyError:
        pool.Add(_build())
        desc = pool.FindMessageTypeByName(f"{PACKAGE}.Holder")
    return message_factory.GetMessageClass(desc)


assert duration_pb2 and timestamp_pb2  # their files must be in the pool before ours
Holder = _load()
Rules = Holder.DESCRIPTOR.fields_by_name["spec"].message_type
