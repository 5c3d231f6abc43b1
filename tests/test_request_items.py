"""The count of a request's items (``stigmer_core.request_items``) and the deserializer that applies it."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import InvalidArgument
from stigmer_core.limits import Limits
from stigmer_core.request_items import ITEMS
from tests import workflow_helpers as wf


def _report(messages: int, tool_calls: int = 0) -> ae.AgentExecutionUpdateStatusInput:
    report = ae.AgentExecutionUpdateStatusInput(execution_id="x")
    for _ in range(messages):
        report.status.messages.add().tool_calls.extend(ae.ToolCall() for _ in range(tool_calls))
    return report


def test_every_element_and_entry_is_counted_at_every_level() -> None:
    report = _report(3, tool_calls=2)
    report.status.messages[1].metadata.update({"a": 1, "b": [1, 2, {"c": True}]})
    # 3 messages + 6 tool calls + 2 struct entries + 3 list values + 1 entry of the inner struct,
    # and 3 more for each Value holding a list or an object (the list, the inner struct)
    assert ITEMS.check(report, 1000) == 21
    report.status.messages[0].tool_calls[0].args.update({"q": "x"})
    assert ITEMS.check(report, 1000) == 22


def test_an_object_or_a_list_in_a_struct_counts_four_empty_or_not() -> None:
    """Each costs a validation about four scalars do: 99,000 empty lists passed the limit and held
    the daemon 1.4 s, four times what the limit allows for."""
    made = wf.workflow("w", tasks=[wf.task("a")])
    made.spec.tasks[0].task_config.Clear()
    rows = made.spec.tasks[0].task_config.fields["rows"].list_value.values
    for _ in range(30):
        rows.add().list_value.SetInParent()
    assert ITEMS.check(made, 1000) == 1 + 1 + 3 + 30 * 4  # the task, "rows", its list, each empty list
    with pytest.raises(InvalidArgument) as refused:
        ITEMS.check(made, 100)
    (violation,) = refused.value.violations
    assert violation.field.startswith('spec.tasks[0].task_config.fields["rows"].list_value.values['), violation.field


def test_repeated_scalars_and_maps_of_scalars_count_too() -> None:
    made = wf.workflow("w", tasks=[wf.task("a")])
    made.metadata.labels.update({"team": "x", "tier": "y"})
    made.metadata.tags.extend(["p", "q", "r"])
    # 1 task, its config's 1 entry, 2 labels, 3 tags
    assert ITEMS.check(made, 1000) == 7


def test_one_past_the_limit_is_refused_naming_the_field_where_the_count_passed_it() -> None:
    report = _report(2, tool_calls=3)  # 8 items
    assert ITEMS.check(report, 8) == 8
    with pytest.raises(InvalidArgument) as refused:
        ITEMS.check(report, 7)
    (violation,) = refused.value.violations
    assert violation.field in {"status.messages[0].tool_calls", "status.messages[1].tool_calls"}
    assert "max_request_items" in violation.description and "STIGMER_MAX_REQUEST_ITEMS" in violation.description


def test_a_path_through_map_keys_and_struct_values_is_named() -> None:
    made = wf.workflow("w", tasks=[wf.task("a")])
    made.spec.tasks[0].task_config.Clear()
    values = made.spec.tasks[0].task_config.fields["rows"].list_value.values
    values.extend(struct_pb2.Value(number_value=i) for i in range(50))
    with pytest.raises(InvalidArgument) as refused:
        ITEMS.check(made, 40)
    assert [v.field for v in refused.value.violations] == ['spec.tasks[0].task_config.fields["rows"].list_value.values']


def test_a_message_that_cannot_hold_items_costs_nothing() -> None:
    assert ITEMS.check(ae.AgentExecutionId(value="x"), 0) == 0
    assert ITEMS.plan(ae.AgentExecutionId.DESCRIPTOR) == ()


class _Registry:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits


def test_the_deserializer_refuses_a_request_past_the_limit_with_its_field() -> None:
    registry = _Registry(Limits(max_request_items=10))
    deserialize = tolerant(ae.AgentExecutionUpdateStatusInput, registry)
    within = deserialize(_report(10).SerializeToString())
    assert isinstance(within, ae.AgentExecutionUpdateStatusInput) and len(within.status.messages) == 10
    past = deserialize(_report(11).SerializeToString())
    assert isinstance(past, Malformed)
    error = refusal(ae.AgentExecutionUpdateStatusInput, past)
    assert [v.field for v in error.violations] == ["status.messages"]
    # the limit is read per request: raising it lets the same bytes through
    registry.limits = Limits(max_request_items=11)
    assert isinstance(deserialize(_report(11).SerializeToString()), ae.AgentExecutionUpdateStatusInput)


def test_bytes_that_do_not_parse_are_still_named_as_such() -> None:
    deserialize = tolerant(workflow_pb2.Workflow, _Registry(Limits()))
    bad = deserialize(b"\xff\xff\xff")
    assert isinstance(bad, Malformed) and bad.error is None
    assert refusal(workflow_pb2.Workflow, bad).violations[0].field == "(request)"


def test_the_limit_is_a_positive_setting() -> None:
    assert Limits.from_env({"STIGMER_MAX_REQUEST_ITEMS": "500"}).max_request_items == 500
    assert Limits().max_request_items == 100_000
