"""The strategies themselves: every valid draw validates, every invalid draw fails on the rule it names.

``rules_message.Rules`` declares nearly every rule protovalidate supports
(required enums and messages, defined_only, in / not_in, unique and sized
repeated fields, string formats, patterns, ignore, oneofs, message-level
oneof and CEL rules); every first-party kind's spec is checked as well.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from stigmer_core.application import Application
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.testing import strategies as s
from tests.kit.rules_message import Holder, Rules

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(s.messages(Rules))
def test_every_drawn_message_validates(message: Any) -> None:
    assert s.violations(message) == []


@settings(FAST, max_examples=60)
@given(st.lists(s.messages(Rules), min_size=4, max_size=4))
def test_required_enum_is_never_zero_and_cel_rules_hold(drawn: list[Any]) -> None:
    for message in drawn:
        assert message.transport != 0
        assert message.transport != 1 or message.command
        assert message.transport != 2 or message.url
        assert len(set(message.tools)) == len(message.tools)
        assert not (message.token and message.password)
        assert message.WhichOneof("target") is not None
        if message.HasField("timeout"):
            # the duration rule of rules_message.py (gte 1s, lte 30s): a draw outside it breaks a declared rule
            assert 1 <= message.timeout.seconds <= 30


def test_rules_that_cannot_be_drawn_directly_are_met_by_redrawing() -> None:
    """Sparse and dense draws both break the CEL rules at times; the strategy still only yields valid ones."""
    plan = s._plan(Rules, 3)
    broken: Counter[str] = Counter()

    @FAST
    @given(st.data())
    def raw(data: st.DataObject) -> None:
        message = plan.raw(data.draw, dense=data.draw(st.booleans()))
        broken.update(rule for _, rule in s.violations(message))

    raw()
    assert broken["even_length"] > 0  # a field-level CEL rule: filtered, not generated


EXPECTED_BREAKABLE = {
    ("spec.transport", "required"),
    ("spec.transport", "enum.defined_only"),
    ("spec.fallback", "enum.in"),
    ("spec.not_sse", "enum.not_in"),
    ("spec.tools", "repeated.unique"),
    ("spec.tools", "repeated.min_items"),
    ("spec.tools", "repeated.max_items"),
    ("spec.email", "string.email"),
    ("spec.hostname", "string.hostname"),
    ("spec.uri", "string.uri"),
    ("spec.uuid", "string.uuid"),
    ("spec.ulid", "string.ulid"),
    ("spec.code", "string.pattern"),
    ("spec.affixed", "string.prefix"),
    ("spec.choice", "string.in"),
    ("spec.not_admin", "string.not_in"),
    ("spec.bounded", "string.min_len"),
    ("spec.bounded", "string.max_len"),
    ("spec.nickname", "string.min_len"),
    ("spec.port", "int32.gte"),
    ("spec.port", "int32.lte"),
    ("spec.port", "int32.not_in"),
    ("spec.ratio", "double.gt"),
    ("spec.inner", "required"),
    ("spec.inner.code", "string.pattern"),
    ("spec.inner.weight", "int32.gt"),
    ("spec.env", "map.max_pairs"),
}


def test_invalid_cases_cover_the_declared_rules() -> None:
    found = set(s.breakable(Holder, "spec"))
    assert found >= EXPECTED_BREAKABLE, EXPECTED_BREAKABLE - found
    assert not any(path == "spec.legacy" for path, _ in found), "an ignored field has no rule to break"


@pytest.mark.parametrize("case", sorted(EXPECTED_BREAKABLE), ids="/".join)
def test_each_invalid_draw_fails_on_the_named_field_and_rule(case: tuple[str, str]) -> None:
    cases = s.invalid_messages(Holder, "spec", only=case)
    assert cases is not None

    @settings(FAST, max_examples=5)
    @given(cases)
    def check(broken: s.Broken) -> None:
        assert (broken.field, broken.rule) == case
        holder = Holder()
        holder.spec.CopyFrom(broken.message)
        fields = [field for field, _ in s.violations(holder)]
        assert broken.field in fields, (broken, fields)

    check()


def _kinds() -> list[str]:

    return sorted(k.name for k in build_registry(plugin_manager()).kinds)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    application = Application.open(tmp_path_factory.mktemp("kinds"), durable=False)
    yield application
    application.close()


@pytest.mark.parametrize("kind_name", _kinds())
def test_every_installed_kind_gets_valid_specs_and_named_invalid_ones(app: Application, kind_name: str) -> None:
    kind = app.registry.kind(kind_name)
    cases = s.invalid_specs(kind)

    @FAST
    @given(s.specs(kind), st.data())
    def check(spec: Any, data: st.DataObject) -> None:
        if spec is not None:
            assert s.violations(spec) == []
        if cases is not None:
            broken = data.draw(cases)
            resource = kind.resource_cls()
            resource.spec.CopyFrom(broken.message)  # type: ignore[attr-defined]
            assert broken.field in [field for field, _ in s.violations(resource)], broken

    check()


def _impossible() -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from stigmer_core.api.buf.validate import validate_pb2

    pool = descriptor_pool.Default()
    name = "stigmer.kittest.v1.Impossible"
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="stigmer_kittest/impossible.proto",
        package="stigmer.kittest.v1",
        syntax="proto3",
        dependency=["buf/validate/validate.proto"],
    )
    message = fdp.message_type.add(name="Impossible")
    message.field.add(name="code", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    rule = message.options.Extensions[validate_pb2.message].cel.add()
    rule.id, rule.expression, rule.message = "never", "false", "cannot hold"
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName(name)
    message_factory.GetMessageClass(desc)
    return desc


def test_a_message_no_draw_can_satisfy_fails_fast_naming_the_rule() -> None:
    @settings(FAST, max_examples=10)
    @given(s.messages(_impossible()))
    def draw(message: Any) -> None:
        pass

    with pytest.raises(Unsatisfiable, match="never"):
        draw()
