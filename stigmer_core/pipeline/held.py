"""Where a custom rpc's response message holds objects of a kind, at any depth.

A custom rpc answers with a message of its own, and the kind's objects can sit
anywhere in it: a field, a repeated field, a map's values, a message of its own
that holds them (a search hit with its score), or an ``Any``. Each must have the
kind's secrets blanked before it is sent, so the fields that can lead to an
object of the kind are found once per response type, from its descriptor, and a
response is walked along those fields only: a message type that cannot hold one
costs a cached lookup.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.kinds.nesting import is_repeated

ANY = "google.protobuf.Any"


class _Holds(enum.Enum):
    OBJECT = 1
    """the field's values are objects of the kind"""
    ANY = 2
    """the field's values are ``Any``s, which may pack one"""
    NESTED = 3
    """the field's values are messages that can hold one, deeper"""


_Plan = tuple[tuple[str, bool, bool, _Holds], ...]
"""For each field that can lead to an object: its name, whether it is repeated, whether it is a
map (its values are what it holds), and what its values are."""


def _reaches(message: Descriptor, resource: Descriptor) -> bool:
    """Whether a message of type ``message`` can hold ``resource`` (or an ``Any``) at any depth.
    A message type that contains itself is visited once."""
    seen: set[str] = set()
    todo = [message]
    while todo:
        descriptor = todo.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            held = field.message_type
            if held is None:
                continue
            if held is resource or held.full_name == ANY:
                return True
            todo.append(held)
    return False


@functools.cache
def plan(message: Descriptor, resource: Descriptor) -> _Plan:
    """The fields of ``message`` that can lead to an object of type ``resource``."""
    found = []
    for field in message.fields:
        held: Descriptor | None = field.message_type
        if held is None:
            continue
        mapped = bool(held.GetOptions().map_entry)
        if mapped:
            value: FieldDescriptor = held.fields_by_name["value"]
            held = value.message_type
            if held is None:
                continue
        if held is resource:
            how = _Holds.OBJECT
        elif held.full_name == ANY:
            how = _Holds.ANY
        elif _reaches(held, resource):
            how = _Holds.NESTED
        else:
            continue
        found.append((field.name, is_repeated(field) and not mapped, mapped, how))
    return tuple(found)


def _values(message: Message, name: str, repeated: bool, mapped: bool) -> Iterable[Any]:
    value = getattr(message, name)
    if mapped:
        return value.values()  # type: ignore[no-any-return]
    if repeated:
        return value  # type: ignore[no-any-return]
    return (value,) if message.HasField(name) else ()


def blank_held(message: Message, resource_cls: type[Message], blank: Callable[[Message], None]) -> None:
    """Has ``blank`` blank, in place, every object of type ``resource_cls`` that ``message``
    holds, however deep (an ``Any`` packing one is unpacked, blanked and packed again)."""
    resource = resource_cls.DESCRIPTOR
    for name, repeated, mapped, how in plan(message.DESCRIPTOR, resource):
        for value in _values(message, name, repeated, mapped):
            if how is _Holds.OBJECT:
                blank(value)
            elif how is _Holds.NESTED:
                blank_held(value, resource_cls, blank)
            elif value.Is(resource):
                packed = resource_cls()
                value.Unpack(packed)
                blank(packed)
                prefix = value.type_url.rpartition("/")[0]
                value.Pack(packed, type_url_prefix=prefix or "type.googleapis.com")
