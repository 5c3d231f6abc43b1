"""Request types whose rules are simple (lengths, plain patterns, counts, integer bounds, a required
message) are checked by a compiled Python function, with protovalidate's verdict whenever that
function says a request keeps to its rules; every other request, and every type with any other
rule, goes to protovalidate as before."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.agents import sample_agent
from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import InvalidArgument
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.plain_rules import compile_rules, plain_pattern
from stigmer_core.plugins import plugin_manager
from stigmer_core.testing import strategies
from tests.runtime_protos import added

REGISTRY = build_registry(plugin_manager())
REQUESTS = sorted(
    {binding.request_cls for kind in REGISTRY.kinds for binding in kind.methods.values()},
    key=lambda cls: cls.DESCRIPTOR.full_name,
)
COMPILED = [cls for cls in REQUESTS if compile_rules(cls.DESCRIPTOR) is not None]
RESOURCES = [kind.resource_cls for kind in REGISTRY.kinds if compile_rules(kind.resource_cls.DESCRIPTOR) is not None]
FD = descriptor_pb2.FieldDescriptorProto


def _protovalidate_passes(message: Message) -> bool:
    return not validation.ready()(message)


def _compiled(message: Message) -> bool:
    check = compile_rules(message.DESCRIPTOR)
    assert check is not None
    return check(message)


def test_the_framework_s_requests_are_compiled() -> None:
    names = {cls.DESCRIPTOR.name for cls in COMPILED}
    assert {"AgentId", "ApiResourceReference", "ListAgentsRequest", "Agent", "AgentInstance"} <= names, names
    assert _compiled(sample_agent("a sample", "t0"))  # labels, lengths and patterns all kept


SPECIAL = [
    "",
    "a",
    "a" * 63,
    "a" * 64,
    "😀" * 63,
    "😀" * 64,
    "a" * 254,
    "-a",
    "a-",
    "A",
    "\u0663",
    "a\n",
    "ab\n",
    "x" * 300,
    "a b",
]
EDGES = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL),
    st.text(max_size=70),
    st.text(alphabet="ab1-_./\nYé😀 ", max_size=70),
)


def _strings(message: Any) -> list[tuple[Any, str]]:
    """Every singular string field of ``message`` and of the messages set in it, at any depth."""
    found = []
    for field, value in message.ListFields():
        if field.type == FD.TYPE_STRING and not field.is_repeated:
            found.append((message, field.name))
        elif field.type == FD.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for child in value if field.is_repeated else [value]:
                found.extend(_strings(child))
    return found or [
        (message, f.name) for f in message.DESCRIPTOR.fields if f.type == FD.TYPE_STRING and not f.is_repeated
    ]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_compiled_check_never_passes_what_protovalidate_refuses(data: st.DataObject) -> None:
    """Valid requests of every compiled type, drawn from their rules, with one string anywhere in
    them (a field, a label's key or value, a tag) replaced by edge text: whatever the compiled
    check passes, protovalidate passes, and what it does not pass gets protovalidate's verdict."""
    cls = data.draw(st.sampled_from(RESOURCES) | st.sampled_from(COMPILED))
    message = data.draw(strategies.messages(cls.DESCRIPTOR))
    text = data.draw(EDGES)
    meta = getattr(message, "metadata", None)
    where = data.draw(st.sampled_from(["field", "label key", "label value", "tag"]))
    if isinstance(meta, metadata_pb2.ApiResourceMetadata) and where != "field":
        if where == "label key":
            meta.labels[text] = "v"
        elif where == "label value":
            meta.labels["k"] = text
        else:
            meta.tags.append(text)
    else:
        targets = _strings(message)
        if targets:
            holder, name = data.draw(st.sampled_from(targets))
            setattr(holder, name, text)
    if _compiled(message):
        assert _protovalidate_passes(message), message
        validation.check(message)
    elif not _protovalidate_passes(message):
        with pytest.raises(InvalidArgument):
            validation.check(message)


SLUG_EDGES = ["", "a", "a-b", "a" * 63, "a" * 64, "A", "-a", "a-", "a\n", "\na", "a b", "\u00e9", "a\u0663"]


@pytest.mark.parametrize("slug", SLUG_EDGES)
def test_a_reference_s_slug_pattern_gives_protovalidates_verdict(slug: str) -> None:
    message = metadata_pb2.ApiResourceReference(org=slug, slug=slug)
    assert _compiled(message) is (_protovalidate_passes(message) and slug.isascii())
    if _protovalidate_passes(message):
        validation.check(message)
    else:
        with pytest.raises(InvalidArgument, match="slug: "):
            validation.check(message)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_resource_breaking_one_rule_of_its_spec_is_never_passed(data: st.DataObject) -> None:
    cls: Any = data.draw(st.sampled_from([c for c in RESOURCES if strategies.invalid_messages(c, "spec") is not None]))
    broken = data.draw(strategies.invalid_messages(cls, "spec"))  # type: ignore[arg-type]
    message = cls(spec=broken.message)
    message.metadata.name = "probe"
    assert not _compiled(message), (broken.field, broken.rule)
    with pytest.raises(InvalidArgument) as refused:
        validation.check(message)
    assert any(v.field.startswith(broken.field) for v in refused.value.violations), refused.value.violations


@pytest.mark.parametrize(
    ("pattern", "plain"),
    [
        ("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", True),
        ("^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$", True),
        ("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", True),
        ("^[^\\r\\n\\x00]*$", True),
        ("^a+?$", True),
        ("^\\d+$", False),  # a Unicode digit to re, 0-9 to RE2
        ("^\\s$", False),  # \x1c is space to re
        ("(?U)^a+$", False),
        ("(?=a)", False),
        ("^a*+a$", False),  # possessive to re, refused by RE2
        ("a{2}", False),
        ("a{,3}", False),  # a repeat to re, text to RE2
        ("[[:alpha:]]", False),
        ("[a--b]", False),
        ("[]a]", False),
    ],
)
def test_which_patterns_are_read_by_python(pattern: str, plain: bool) -> None:
    assert plain_pattern(pattern) is plain


def _probe(
    name: str,
    fields: list[FD],
    *,
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
    oneofs: tuple[str, ...] = (),
    imports: tuple[str, ...] = (),
) -> Any:
    def describe() -> descriptor_pb2.FileDescriptorProto:
        proto = descriptor_pb2.FileDescriptorProto(
            name=f"test/plain/{name}.proto",
            package=f"test.plain.{name}",
            syntax="proto3",
            dependency=["buf/validate/validate.proto", *imports],
        )
        message = proto.message_type.add(name="Probe")
        message.field.extend(fields)
        message.nested_type.extend(nested)
        for oneof in oneofs:
            message.oneof_decl.add(name=oneof)
        return proto

    file = added(f"test/plain/{name}.proto", describe)
    return message_factory.GetMessageClass(file.message_types_by_name["Probe"])


def _field(name: str, number: int, kind: Any, rules: validate_pb2.FieldRules | None = None, **more: Any) -> FD:
    field = FD(name=name, number=number, type=kind, label=more.pop("label", FD.LABEL_OPTIONAL), **more)
    if rules is not None:
        extension: Any = validate_pb2.field
        field.options.Extensions[extension].CopyFrom(rules)
    return field


NO_Y = validate_pb2.Rule(id="no-y", expression="!this.contains('y')", message="no y")
STRING_8 = validate_pb2.StringRules(max_len=8)


@pytest.mark.parametrize(
    ("rules", "value"),
    [
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, pattern="^\\d+$")), "\u0663"),
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, prefix="x")), "y"),
        (validate_pb2.FieldRules(string=STRING_8, required=True), ""),
        (validate_pb2.FieldRules(string=STRING_8, cel=[NO_Y]), "y"),
        (validate_pb2.FieldRules(string=STRING_8, ignore=validate_pb2.IGNORE_ALWAYS), "y" * 9),
    ],
    ids=["escaped_pattern", "prefix", "required", "cel", "ignore"],
)
def test_a_field_with_any_other_rule_leaves_its_type_to_protovalidate(
    rules: validate_pb2.FieldRules, value: str, request: pytest.FixtureRequest
) -> None:
    probe = _probe(f"other_{request.node.callspec.id}", [_field("value", 1, FD.TYPE_STRING, rules)])
    assert compile_rules(probe.DESCRIPTOR) is None
    message = probe(value=value)
    if _protovalidate_passes(message):
        validation.check(message)
    else:
        with pytest.raises(InvalidArgument):
            validation.check(message)


def test_a_message_level_rule_or_a_recursive_type_with_rules_is_left_to_protovalidate() -> None:
    assert compile_rules(metadata_pb2.ApiResourceReference.DESCRIPTOR) is not None
    node = descriptor_pb2.DescriptorProto(name="Node")
    node.field.extend([
        _field("name", 1, FD.TYPE_STRING, validate_pb2.FieldRules(string=STRING_8)),
        _field("child", 2, FD.TYPE_MESSAGE, type_name=".test.plain.recursive.Probe.Node"),
    ])  # fmt: skip
    root = _field("root", 1, FD.TYPE_MESSAGE, type_name=".test.plain.recursive.Probe.Node")
    probe = _probe("recursive", [root], nested=(node,))
    assert compile_rules(probe.DESCRIPTOR) is None
    deep = probe()
    deep.root.child.child.name = "y" * 9
    with pytest.raises(InvalidArgument, match=r"root\.child\.child\.name"):
        validation.check(deep)


def test_presence_counts_and_bounds_as_protovalidate_reads_them() -> None:
    """A proto3 optional string is checked only when set; a required message must be set;
    counts of items and pairs, the items' and keys' rules, and an int's bounds hold."""
    entry = descriptor_pb2.DescriptorProto(name="PairsEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.extend([_field("key", 1, FD.TYPE_STRING), _field("value", 2, FD.TYPE_STRING)])
    child = descriptor_pb2.DescriptorProto(name="Child")
    child.field.append(
        _field("name", 1, FD.TYPE_STRING, validate_pb2.FieldRules(string=validate_pb2.StringRules(min_len=1)))
    )
    fields = [
        _field("maybe", 1, FD.TYPE_STRING, validate_pb2.FieldRules(string=validate_pb2.StringRules(min_len=2)), proto3_optional=True, oneof_index=0),
        _field("child", 2, FD.TYPE_MESSAGE, validate_pb2.FieldRules(required=True), type_name=".test.plain.shapes.Probe.Child"),
        _field("items", 3, FD.TYPE_STRING, validate_pb2.FieldRules(repeated=validate_pb2.RepeatedRules(max_items=2, items=validate_pb2.FieldRules(string=validate_pb2.StringRules(pattern="^[a-z]+$")))), label=FD.LABEL_REPEATED),
        _field("pairs", 4, FD.TYPE_MESSAGE, validate_pb2.FieldRules(map=validate_pb2.MapRules(min_pairs=1, keys=validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=3)))), label=FD.LABEL_REPEATED, type_name=".test.plain.shapes.Probe.PairsEntry"),
        _field("count", 5, FD.TYPE_INT32, validate_pb2.FieldRules(int32=validate_pb2.Int32Rules(gt=0, lte=10))),
    ]  # fmt: skip

    probe = _probe("shapes", fields, nested=(child, entry), oneofs=("_maybe",))  # proto3 optional's own oneof
    good = probe(child={"name": "c"}, items=["ab"], pairs={"k": "v"}, count=10)
    cases = [
        good,
        probe(maybe="x", child={"name": "c"}, items=["ab"], pairs={"k": "v"}, count=10),
        probe(items=["ab"], pairs={"k": "v"}, count=10),
        probe(child={}, items=["ab"], pairs={"k": "v"}, count=10),
        probe(child={"name": "c"}, items=["ab", "cd", "ef"], pairs={"k": "v"}, count=10),
        probe(child={"name": "c"}, items=["Ab"], pairs={"k": "v"}, count=10),
        probe(child={"name": "c"}, items=["ab"], pairs={}, count=10),
        probe(child={"name": "c"}, items=["ab"], pairs={"long": "v"}, count=10),
        probe(child={"name": "c"}, items=["ab"], pairs={"k": "v"}, count=0),
        probe(child={"name": "c"}, items=["ab"], pairs={"k": "v"}, count=11),
    ]
    check = compile_rules(probe.DESCRIPTOR)
    assert check is not None
    verdicts = [(check(message), _protovalidate_passes(message)) for message in cases]
    assert verdicts == [(True, True)] + [(False, False)] * 9, verdicts


@pytest.mark.parametrize(
    ("seconds", "nanos", "fine"),
    [
        (-62_135_596_800, 0, True),
        (253_402_300_799, 999_999_999, True),
        (-62_135_596_801, 0, False),
        (253_402_300_800, 0, False),
        (0, -1, False),
        (0, 1_000_000_000, False),
    ],
)
def test_a_timestamp_is_held_to_what_json_can_write(seconds: int, nanos: int, fine: bool) -> None:
    """The compiled check walks a request's Timestamps as ``times.check`` does, so a request it
    passes needs no second walk; one it does not pass is refused naming the field."""
    agent = sample_agent("stamped", "t0")
    agent.metadata.created_at.seconds, agent.metadata.created_at.nanos = seconds, nanos
    _held(agent, fine, "metadata.created_at")


@pytest.mark.parametrize(
    ("seconds", "nanos", "fine"),
    [
        (315_576_000_000, 999_999_999, True),
        (-315_576_000_000, -999_999_999, True),
        (3, 0, True),
        (315_576_000_001, 0, False),
        (1, -1, False),
        (0, 1_000_000_000, False),
    ],
)
def test_a_duration_is_held_to_what_json_can_write(seconds: int, nanos: int, fine: bool) -> None:
    waits = _field("waits", 1, FD.TYPE_MESSAGE, type_name=".google.protobuf.Duration", label=FD.LABEL_REPEATED)
    probe = _probe("durations", [waits], imports=("google/protobuf/duration.proto",))
    message = probe()
    message.waits.add(seconds=seconds, nanos=nanos)
    _held(message, fine, "waits[0]")


def _held(message: Message, fine: bool, field: str) -> None:
    """The compiled check passes ``message`` exactly when it is ``fine``; else it is refused naming ``field``."""
    assert _compiled(message) is fine
    if fine:
        validation.check(message)
        return
    with pytest.raises(InvalidArgument) as refused:
        validation.check(message)
    assert [v.field for v in refused.value.violations] == [field]
