"""How many items a request carries, counted before anything else looks at it.

Validating a request costs about 2.5 µs per item (an element of a repeated
field, an entry of a map, at any level, the contents of a ``Struct`` too; a
``Value`` holding an object or a list about four times that, and counts four),
holding the GIL: a valid 2 MB request of a million empty ``ListValue``
elements held the daemon for 14 s. ``Limits.max_request_items`` bounds that.

Every item takes at least one byte on the wire, so a request no longer in
bytes than the limit cannot pass it and is not looked at. A longer one is
walked through the fields that can hold items (decided once per message
type), counting lengths without visiting scalars, and stops as soon as the
count passes the limit: the walk itself visits at most as many messages as
the limit allows.
"""

from __future__ import annotations

from typing import Any

import attrs
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from stigmer_core.errors import InvalidArgument

_ONE, _LIST, _MAP = 0, 1, 2
_VALUE = Value.DESCRIPTOR
_COMPOSITE = frozenset({"struct_value", "list_value"})
COMPOSITE_EXTRA = 3
"""Items a ``Value`` holding an object or a list counts beyond its own one: validating one (an empty
list as much as a full one) costs about four times a scalar's 2.5 µs, so a request of empty lists
held the daemon four times as long as the limit allows for."""


@attrs.frozen
class _Field:
    name: str
    shape: int  # _ONE, _LIST or _MAP
    inner: Descriptor | None
    """The element's (or the map value's, or the message's) type when it can hold items itself."""


def _repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


class ItemCount:
    """Refuses a message holding more items than a limit, naming the field where the count passed it."""

    def __init__(self) -> None:
        self._plans: dict[Descriptor, tuple[_Field, ...]] = {}
        """By the descriptor itself: ``full_name`` makes a new string at every read."""
        self._holds: dict[str, bool] = {}

    def _can_hold(self, desc: Descriptor, visiting: frozenset[str] = frozenset()) -> bool:
        name = desc.full_name
        found = self._holds.get(name)
        if found is not None:
            return found
        if name in visiting:
            return False  # the cycle's other fields decide
        inside = visiting | {name}
        found = any(
            _repeated(field) or (field.message_type is not None and self._can_hold(field.message_type, inside))
            for field in desc.fields
        )
        if found or not visiting:  # "cannot" inside a cycle may change once the cycle is closed
            self._holds[name] = found
        return found

    def plan(self, desc: Descriptor) -> tuple[_Field, ...]:
        found = self._plans.get(desc)
        if found is None:
            fields = []
            for field in desc.fields:
                sub = field.message_type
                if sub is not None and sub.GetOptions().map_entry:
                    value = sub.fields_by_name["value"].message_type
                    fields.append(_Field(field.name, _MAP, value if value and self._can_hold(value) else None))
                elif _repeated(field):
                    fields.append(_Field(field.name, _LIST, sub if sub and self._can_hold(sub) else None))
                elif sub is not None and self._can_hold(sub):
                    fields.append(_Field(field.name, _ONE, sub))
            found = self._plans[desc] = tuple(fields)
        return found

    def check(self, message: Message, limit: int) -> int:
        """Raise InvalidArgument when ``message`` holds more than ``limit`` items; else return how many it holds."""
        total = 0
        # Each entry is a group of messages of one type: (messages, their type, the
        # path of their field, what tells them apart there: list indexes, map keys,
        # or None for a field holding one message).
        pending: list[tuple[Any, Any, Any, Any]] = [((message,), message.DESCRIPTOR, None, None)]
        plans = self._plans
        while pending:
            group, desc, where, labels = pending.pop()
            fields = plans.get(desc) or self.plan(desc)
            values = desc is _VALUE
            for i, current in enumerate(group):
                # most of a large Struct is scalar Values: one look each, not a look per field
                if values:
                    if current.WhichOneof("kind") not in _COMPOSITE:
                        continue
                    total += COMPOSITE_EXTRA  # an object or a list costs a validation several scalars do
                    if total > limit:
                        raise _past(limit, where if labels is None else (where, labels[i]))
                path = where if labels is None else (where, labels[i])
                for field in fields:
                    name = field.name
                    shape = field.shape
                    if shape == _ONE:
                        if current.HasField(name):
                            pending.append(((getattr(current, name),), field.inner, (path, name), None))
                        continue
                    items = getattr(current, name)
                    total += len(items)
                    if total > limit:
                        raise _past(limit, (path, name))
                    inner = field.inner
                    if inner is None or not items:
                        continue
                    if shape == _MAP:
                        keys = list(items)
                        pending.append(([items[k] for k in keys], inner, (path, name), [(k,) for k in keys]))
                    else:
                        pending.append((items, inner, (path, name), range(len(items))))
        return total


def _past(limit: int, path: Any) -> InvalidArgument:
    return InvalidArgument.field(
        _dotted(path),
        f"the request holds more than {limit} items (elements of lists and entries of maps, at every level, "
        f"counted up to this field; a JSON object or list inside a Struct counts {COMPOSITE_EXTRA + 1}): the limit "
        "max_request_items (STIGMER_MAX_REQUEST_ITEMS)",
    )


def _dotted(path: Any) -> str:
    """A field's dotted path (``status.messages[3].metadata``) from the linked
    ``(parent, part)`` pairs the walk keeps, a part being a field's name, a list
    index or a map's ``(key,)``: joined only for an error."""
    parts: list[str] = []
    while path is not None:
        path, part = path
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            key = part[0]
            parts.append(f'["{key}"]' if isinstance(key, str) else f"[{key}]")
    return ".".join(reversed(parts)).replace(".[", "[")


ITEMS = ItemCount()
"""The one count every served method's request deserializer uses (``decoding.tolerant``)."""
