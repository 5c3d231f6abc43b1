"""The contract's specs hold enum numbers the enum does not define, unless its rules forbid them.

proto3 lets any client send such a number and the server stores it: a kind whose index took
every value for a name (``Color.Name(v)``) passed its contract and failed on the first request
carrying one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import find, settings

from stigmer_core.testing.strategies import messages
from tests.widget_kind import DESCRIPTOR

SPEC = DESCRIPTOR.message_types_by_name["WidgetSpec"]
DEFINED = {v.number for v in DESCRIPTOR.enum_types_by_name["Color"].values}


def test_an_open_enum_is_drawn_past_its_defined_values_too() -> None:
    found: Any = find(messages(SPEC), lambda spec: spec.color not in DEFINED, settings=settings(max_examples=2000))
    assert found.color > max(DEFINED)
    again: Any = find(messages(SPEC), lambda spec: spec.color in DEFINED and spec.color != 0)
    assert again.color in DEFINED
