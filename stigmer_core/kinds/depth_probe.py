"""How deep a stored object nests, told by protobuf's own parser.

``NestingCheck`` walks an object's recursive fields in Python: a few µs for
each message it visits. Every write of an object pays for the whole object,
so a run holding 65,000 small messages made each of its heartbeats walk them
all, 0.6 s with the store's write lock held, and every other writer waited.

protobuf's parser refuses a message nested past its recursion limit (100),
in C, at the speed of a parse. Parsing the object's bytes inside ``100 -
limit`` levels of a wrapper message therefore fails exactly when the object
nests past ``limit``: one concatenation and one parse of bytes the write has
serialized anyway. The offset between the parser's count and
``NestingCheck``'s (the object is level 1 there, every message inside it one
more, a map entry too) is measured once, with the parser in use, rather than
assumed; were it ever not what it should be, every object is walked as before.
Only a failed probe walks the object, to name the field.
"""

from __future__ import annotations

import threading
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Value

_PACKAGE = "stigmer_depth_probe"
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_INNER, _OBJECT = b"\x0a", b"\x12"  # field 1 (the next wrapper) and 2 (the object), length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def wrapped(raw: bytes, levels: int) -> bytes:
    """``raw`` as field 2 of a wrapper inside ``levels`` more wrappers (each one's field 1): one copy of ``raw``."""
    head = _OBJECT + _varint(len(raw))
    parts = [head]
    size = len(head) + len(raw)
    for _ in range(levels):
        prefix = _INNER + _varint(size)
        parts.append(prefix)
        size += len(prefix)
    parts.reverse()
    parts.append(raw)
    return b"".join(parts)


class DepthProbe:
    """``fits(desc, raw, limit)``: whether serialized ``raw`` (a ``desc``) nests at most ``limit`` levels."""

    def __init__(self) -> None:
        self._wrappers: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._levels_at_limit: int | None = None
        """The wrapper levels that, with ``limit`` subtracted, make the parser refuse exactly the
        objects nested past ``limit``; None when the parser did not behave as measured."""
        self._calibrated = False  # measured at the first write that needs it, not when imported

    def wrapper(self, desc: Descriptor) -> Any:
        """The wrapper class of ``desc`` (``{wrapper inner = 1; desc obj = 2;}``), made once per type."""
        found = self._wrappers.get(desc.full_name)
        if found is not None:
            return found
        with self._lock:
            found = self._wrappers.get(desc.full_name)
            if found is None:
                found = self._wrappers[desc.full_name] = _make_wrapper(desc)
        return found

    def fits(self, desc: Descriptor, raw: bytes, limit: int) -> bool | None:
        """True or False; None when the parser cannot tell (then walk the object)."""
        if not self._calibrated:
            with self._lock:
                if not self._calibrated:
                    self._levels_at_limit = self._calibrate()
                    self._calibrated = True
        if self._levels_at_limit is None:
            return None
        levels = self._levels_at_limit - limit
        if levels < 0:
            return None
        try:
            self.wrapper(desc).FromString(wrapped(raw, levels))
        except DecodeError:
            return False
        return True

    def _calibrate(self) -> int | None:
        """Measure, on chains of ``Value`` of known depth, where the parser starts refusing."""
        try:
            found = {_first_refused(self.wrapper(Value.DESCRIPTOR), depth) + depth for depth in (1, 3, 7, 31)}
        except Exception:  # a parser or pool that does not take the wrapper: walk instead
            return None
        if len(found) != 1:
            return None
        return found.pop() - 1


def _first_refused(wrapper: Any, depth: int) -> int:
    """The fewest wrapper levels around a ``Value`` nested ``depth`` levels (odd: NestingCheck's
    count, a Value holding a list holding a Value being two levels more) that the parser refuses."""
    value = Value(string_value="x")
    for _ in range((depth - 1) // 2):
        outer = Value()
        outer.list_value.values.append(value)
        value = outer
    raw = value.SerializeToString()
    for levels in range(200):
        try:
            wrapper.FromString(wrapped(raw, levels))
        except DecodeError:
            return levels
    raise ValueError("the parser took every depth")


def _make_wrapper(desc: Descriptor) -> Any:
    pool = desc.file.pool or descriptor_pool.Default()
    name = "W_" + desc.full_name.replace(".", "_")
    try:  # made already (by another DepthProbe in this process)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}/{desc.full_name}.proto", package=_PACKAGE)
    proto.syntax = "proto3"
    proto.dependency.append(desc.file.name)
    message = proto.message_type.add(name=name)
    message.field.add(name="inner", number=1, type=_MESSAGE, label=_OPTIONAL, type_name=f".{_PACKAGE}.{name}")
    message.field.add(name="obj", number=2, type=_MESSAGE, label=_OPTIONAL, type_name=f".{desc.full_name}")
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


DEPTH = DepthProbe()
"""The one probe every write uses."""
