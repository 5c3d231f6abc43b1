"""Request bytes that do not parse: INVALID_ARGUMENT from the handler, never grpc's INTERNAL.

grpc answers a request deserializer that raises with INTERNAL (or UNKNOWN on
its asyncio server) and logs it as an error, though the fault is the
caller's. So every handler the framework serves parses tolerantly: a request
that does not parse reaches the handler as ``Malformed``, which it answers
with ``refusal``.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from stigmer_core.errors import FieldViolation, InvalidArgument


class Malformed:
    """Stands for request bytes that did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    parse = cls.FromString

    def deserialize(data: bytes) -> Message | Malformed:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or anything the parser raises on garbage
            return Malformed(str(exc) or type(exc).__name__)

    return deserialize


def refusal(cls: type[Message], request: Malformed) -> InvalidArgument:
    name = cls.DESCRIPTOR.full_name
    return InvalidArgument(
        f"request is not a valid {name}: {request.reason}", [FieldViolation("(request)", f"cannot be parsed as {name}")]
    )
