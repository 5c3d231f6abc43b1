"""Requests whose only rules bound the length of their strings or give them a plain pattern (id
messages, a reference by org and slug) are checked without protovalidate when they keep to them,
with the same verdict; everything else, and every request that breaks a rule, goes to
protovalidate as before."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.errors import InvalidArgument
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import validation
from stigmer_core.plugins import plugin_manager
from tests.runtime_protos import added

REQUESTS = sorted(
    {binding.request_cls for kind in build_registry(plugin_manager()).kinds for binding in kind.methods.values()},
    key=lambda cls: cls.DESCRIPTOR.full_name,
)
PLAIN = [cls for cls in REQUESTS if validation._plain_rules(cls.DESCRIPTOR)]


def _protovalidate_passes(message: Any) -> bool:
    return not validation.ready()(message)


def test_every_kinds_id_message_is_checked_by_its_lengths() -> None:
    names = {cls.DESCRIPTOR.name for cls in PLAIN}
    assert {"AgentId", "SessionId", "SkillId", "EnvironmentId", "WorkflowExecutionId"} <= names, names
    assert "ApiResourceReference" in names  # lengths and the slug pattern on org and slug
    assert validation._plain_rules(agent_pb2.ListAgentsRequest.DESCRIPTOR) is None  # labels: a map
    assert validation._plain_rules(agent_pb2.Agent.DESCRIPTOR) is None  # message fields


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from(PLAIN),
    text=st.text(max_size=70)
    | st.text(alphabet="😀ab", min_size=60, max_size=70)
    | st.text(alphabet="ab1-\nYé", max_size=70),  # a slug's edges: dashes, case, a newline, non-ASCII
)
def test_the_lengths_give_protovalidates_verdict(cls: Any, text: str) -> None:
    fields = validation._plain_rules(cls.DESCRIPTOR)
    assert fields
    message = cls(**{name: text for name, *_ in fields})
    if _protovalidate_passes(message):
        validation.check(message)
    else:
        with pytest.raises(InvalidArgument):
            validation.check(message)


def _rules_file(name: str, rules: validate_pb2.FieldRules) -> Any:
    def describe() -> descriptor_pb2.FileDescriptorProto:
        proto = descriptor_pb2.FileDescriptorProto(
            name=f"test/lengths/{name}.proto",
            package=f"test.lengths.{name}",
            syntax="proto3",
            dependency=["buf/validate/validate.proto"],
        )
        message = proto.message_type.add(name="Probe")
        field = message.field.add(name="value", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
        field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        field.options.Extensions[validate_pb2.field].CopyFrom(rules)
        return proto

    file = added(f"test/lengths/{name}.proto", describe)
    return message_factory.GetMessageClass(file.message_types_by_name["Probe"])


NO_Y = validate_pb2.Rule(id="no-y", expression="!this.contains('y')", message="no y")


@pytest.mark.parametrize(
    ("rules", "value"),
    [
        # ``re``'s \\d takes any Unicode digit, RE2's only 0-9: a pattern with an escape is RE2's alone
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, pattern="^\\d+$")), "\u0663"),
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, pattern="(?U)^a+$")), "b"),
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, prefix="x")), "y"),
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8), required=True), ""),
        (validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8), cel=[NO_Y]), "y"),
    ],
    ids=["escaped_pattern", "flagged_pattern", "prefix", "required", "cel"],
)
def test_a_field_with_any_other_rule_goes_to_protovalidate(
    rules: validate_pb2.FieldRules, value: str, request: pytest.FixtureRequest
) -> None:
    probe = _rules_file(request.node.callspec.id, rules)
    assert validation._plain_rules(probe.DESCRIPTOR) is None
    with pytest.raises(InvalidArgument):  # the value keeps to the length bound and breaks the other rule
        validation.check(probe(value=value))


def test_a_possessive_repeat_is_left_to_protovalidate() -> None:
    """``re`` reads ``a*+`` as a possessive repeat (``^a*+a$`` matches nothing), RE2 refuses the
    pattern: whatever protovalidate then says is the answer, not ``re``'s."""
    rules = validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8, pattern="^a*+a$"))
    assert validation._plain_rules(_rules_file("possessive", rules).DESCRIPTOR) is None


SLUG_EDGES = ["", "a", "a-b", "a" * 63, "a" * 64, "A", "-a", "a-", "a\n", "\na", "a b", "\u00e9", "a\u0663"]


@pytest.mark.parametrize("slug", SLUG_EDGES)
def test_a_reference_s_slug_pattern_gives_protovalidates_verdict(slug: str) -> None:
    from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

    message = metadata_pb2.ApiResourceReference(org=slug, slug=slug)
    if _protovalidate_passes(message):
        validation.check(message)
    else:
        with pytest.raises(InvalidArgument, match="slug: "):
            validation.check(message)
