"""How deep a message nests, checked only where it can.

protobuf refuses to parse a message nested past 100 levels, and a list page
(or any message that carries an object) adds levels to the object, so an
object that parses alone can still make every page holding it unreadable.
Writes are therefore held to ``Limits.max_nesting_depth``.

Most fields cannot nest without bound: their depth is fixed by the schema.
Only a field whose type can contain itself (``google.protobuf.Struct`` and
``Value``, or any recursive message) can, so the plan of a message type,
computed once per type, lists just the fields that lead to such a type, and
a write walks only those.

The same walk refuses a ``Value`` number that is not finite (NaN or an
infinity): protobuf stores one, but JSON cannot carry it, so every client
reading the object as JSON, and a YAML export of the whole store, would fail
on it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from stigmer_core.errors import InvalidArgument


def is_repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


@attrs.frozen
class _Step:
    name: str
    kind: str  # "one", "list" or "map"
    type: Descriptor


def _unbounded(desc: Descriptor, cache: dict[str, bool], visiting: set[str]) -> bool:
    """Whether ``desc`` can contain a message type that contains itself."""
    name = desc.full_name
    if name in cache:
        return cache[name]
    if name in visiting:
        return True
    visiting.add(name)
    found = False
    for field in desc.fields:
        sub = field.message_type
        if sub is not None and _unbounded(sub, cache, visiting):
            found = True
    visiting.discard(name)
    cache[name] = found
    return found


def _steps(desc: Descriptor, cache: dict[str, bool]) -> tuple[_Step, ...]:
    steps = []
    for field in desc.fields:
        sub = field.message_type
        if sub is None or not _unbounded(sub, cache, set()):
            continue
        if sub.GetOptions().map_entry:
            value = sub.fields_by_name["value"].message_type
            if value is not None:
                steps.append(_Step(field.name, "map", value))
        else:
            steps.append(_Step(field.name, "list" if is_repeated(field) else "one", sub))
    return tuple(steps)


def _in_cycle(desc: Descriptor) -> bool:
    """Whether ``desc`` can contain itself (Struct, Value, a recursive message)."""
    seen: set[str] = set()
    pending = [f.message_type for f in desc.fields if f.message_type is not None]
    while pending:
        sub = pending.pop()
        if sub.full_name == desc.full_name:
            return True
        if sub.full_name not in seen:
            seen.add(sub.full_name)
            pending.extend(f.message_type for f in sub.fields if f.message_type is not None)
    return False


class NestingCheck:
    """Refuses a message nested deeper than a limit, naming the field it starts at.

    The field named is where the recursive part begins (``spec.tasks[0].task_config``),
    not the path down to the level that passed the limit.
    """

    def __init__(self) -> None:
        self._unbounded: dict[str, bool] = {}
        self._plans: dict[str, tuple[_Step, ...]] = {}
        self._cycles: dict[str, bool] = {}

    def plan(self, desc: Any) -> tuple[_Step, ...]:
        found = self._plans.get(desc.full_name)
        if found is None:
            found = self._plans[desc.full_name] = _steps(desc, self._unbounded)
        return found

    def can_nest(self, desc: Descriptor) -> bool:
        return bool(self.plan(desc))

    def check(self, message: Message, limit: int) -> None:
        """Raise InvalidArgument when ``message`` (level 1) nests past ``limit``."""
        plan = self.plan(message.DESCRIPTOR)
        if plan:
            self._walk(message, plan, 1, limit, "")

    def _recursive(self, desc: Descriptor) -> bool:
        found = self._cycles.get(desc.full_name)
        if found is None:
            found = self._cycles[desc.full_name] = _in_cycle(desc)
        return found

    def _walk(
        self, message: Message, plan: tuple[_Step, ...], depth: int, limit: int, path: str, inside: bool = False
    ) -> None:
        if depth > limit:
            raise InvalidArgument.field(
                path or "(message)", f"nests deeper than {limit} levels, the limit of a stored object"
            )
        if type(message) is Value:
            kind = message.WhichOneof("kind")
            if kind is None:  # protobuf's JSON mapping has no such value: Go's protojson refuses to print it
                raise InvalidArgument.field(path or "(message)", _NO_KIND)
            if kind == "number_value" and not math.isfinite(message.number_value):
                raise InvalidArgument.field(
                    path or "(message)", "holds a number that is not finite (NaN or infinity), which JSON cannot carry"
                )
        for step in plan:
            inner = self.plan(step.type)
            deeper = inside or self._recursive(step.type)
            if step.kind == "one":
                if message.HasField(step.name):
                    where = path if inside else _join(path, step.name)
                    self._walk(getattr(message, step.name), inner, depth + 1, limit, where, deeper)
            elif step.kind == "list":
                values = step.type is _VALUE
                for i, child in enumerate(getattr(message, step.name)):
                    if values and depth + 1 <= limit and _leaf(child):  # a JSON scalar: nothing below it
                        continue
                    where = path if inside else _join(path, f"{step.name}[{i}]")
                    self._walk(child, inner, depth + 1, limit, where, deeper)
            else:  # a map entry is one level, its value the next
                values = step.type is _VALUE
                for key, child in getattr(message, step.name).items():
                    if values and depth + 2 <= limit and _leaf(child):
                        continue
                    where = path if inside else _join(path, f'{step.name}["{key}"]')
                    self._walk(child, inner, depth + 2, limit, where, deeper)


_VALUE = Value.DESCRIPTOR
_COMPOSITE = frozenset({"struct_value", "list_value"})
_NO_KIND = (
    "holds a google.protobuf.Value with none of its kinds set (null_value, number_value, string_value,"
    " bool_value, struct_value, list_value), which JSON cannot carry; a client sends one when it names"
    " the kind in a spelling its protobuf library ignores (stringValue where its message objects take"
    " string_value, as ones built from reflection do, or string_value where they take stringValue)"
)


def _leaf(value: Value) -> bool:
    """A ``Value`` holding a scalar JSON can write (walked values are 99% of a large Struct):
    one look, where a walk costs a call and a plan. A number that is not finite, or a value
    with no kind, is not a leaf, so the walk names it."""
    kind = value.WhichOneof("kind")
    if kind in _COMPOSITE or kind is None:
        return False
    return kind != "number_value" or math.isfinite(value.number_value)


NESTING = NestingCheck()
"""The one check every write uses; the registry computes each kind's plan when it is built."""


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part
