"""The parser's verdict on a stored object's depth is the walk's, at every limit a daemon takes."""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Value
from hypothesis import given, settings
from hypothesis import strategies as st

from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.errors import InvalidArgument
from stigmer_core.kinds.depth_probe import DEPTH, DepthProbe, wrapped
from stigmer_core.kinds.nesting import NESTING

json_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=2), st.dictionaries(st.text(max_size=2), inner, min_size=1, max_size=2)
    ),
    max_leaves=40,
)


def _walk_says(message: Any, limit: int) -> bool:
    try:
        NESTING.check(message, limit)
    except InvalidArgument:
        return False
    return True


def _value(tree: Any) -> Value:
    found = Value()
    if isinstance(tree, dict):
        found.struct_value.update(tree)
    elif isinstance(tree, list):
        found.list_value.extend(tree)
    elif tree is None:
        found.null_value = 0  # type: ignore[assignment]
    elif isinstance(tree, bool):
        found.bool_value = tree
    elif isinstance(tree, int):
        found.number_value = tree
    else:
        found.string_value = tree
    return found


@settings(max_examples=300, deadline=None)
@given(trees=st.lists(json_trees, min_size=1, max_size=3), wraps=st.integers(0, 30), limit=st.integers(8, 90))
def test_the_parser_and_the_walk_agree_on_every_object(trees: list[Any], wraps: int, limit: int) -> None:
    """In a run's messages (a Struct in a repeated field) and in a workflow's task config (a map of
    Values), wrapped in lists to reach every depth around every limit."""
    run = ae.AgentExecution()
    flow = workflow_pb2.Workflow()
    for tree in trees:
        for _ in range(wraps):
            tree = [tree]
        run.status.messages.add().metadata.fields["k"].CopyFrom(_value(tree))
        flow.spec.tasks.add(name="t").task_config.fields["k"].CopyFrom(_value(tree))
    for message in (run, flow):
        said = DEPTH.fits(message.DESCRIPTOR, message.SerializeToString(), limit)
        assert said is _walk_says(message, limit), (limit, wraps)


def test_a_probe_of_its_own_agrees_with_the_first() -> None:
    """Wrapper types are added to protobuf's pool once; another probe finds them there."""
    other = DepthProbe()
    flow = workflow_pb2.Workflow()
    flow.spec.tasks.add(name="t").task_config.update({"a": [[[1]]]})
    raw = flow.SerializeToString()
    assert other.wrapper(flow.DESCRIPTOR) is DEPTH.wrapper(flow.DESCRIPTOR)
    assert [other.fits(flow.DESCRIPTOR, raw, limit) for limit in (8, 9, 10, 11)] == [
        _walk_says(flow, limit) for limit in (8, 9, 10, 11)
    ]


def test_wrapping_keeps_the_object_whole() -> None:
    flow = workflow_pb2.Workflow()
    flow.metadata.name = "x" * 300  # a length of two varint bytes
    wrapper = DEPTH.wrapper(flow.DESCRIPTOR)
    outer = wrapper.FromString(wrapped(flow.SerializeToString(), 3))
    assert outer.inner.inner.inner.obj == flow
