"""Request bytes that do not parse: INVALID_ARGUMENT from the handler, never grpc's INTERNAL.

grpc answers a request deserializer that raises with INTERNAL (or UNKNOWN on
its asyncio server) and logs it as an error, though the fault is the
caller's. So every handler the framework serves parses tolerantly: a request
that does not parse reaches the handler as ``Malformed``, which it answers
with ``refusal``.

The same deserializer holds a request to ``Limits.max_request_items``
(``request_items``): a request past it is refused before validation or
anything else pays for its size, and before authentication too, except on
grpc's sync server, where a caller without a valid token is refused before
its message is read at all (``request_read``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from google.protobuf.message import Message

from stigmer_core.errors import FieldViolation, InvalidArgument
from stigmer_core.limits import Limits
from stigmer_core.request_items import ITEMS
from stigmer_core.wire_walk import DEEP, PARSE_DEPTH, why_unparsed


class Malformed:
    """Stands for request bytes that did not parse, or parsed past a limit (``error``)."""

    __slots__ = ("error", "reason")

    def __init__(self, reason: str, error: InvalidArgument | None = None) -> None:
        self.reason = reason
        self.error = error


class HoldsLimits(Protocol):
    """Where the limits are read per request (a registry), so a change to them applies at once."""

    @property
    def limits(self) -> Limits: ...


def tolerant(cls: type[Message], held_to: HoldsLimits | None = None) -> Callable[[bytes], Message | Malformed]:
    parse = cls.FromString

    def deserialize(data: bytes) -> Message | Malformed:
        try:
            message = parse(data)
        except Exception as exc:  # DecodeError, or anything the parser raises on garbage
            return _unparsed(cls, data, str(exc) or type(exc).__name__, held_to)
        if held_to is not None:
            limit = held_to.limits.max_request_items
            if len(data) > limit:  # every item takes a byte at least: a shorter request is within
                try:
                    ITEMS.check(message, limit)
                except InvalidArgument as exc:
                    return Malformed(exc.message, exc)
        return message

    return deserialize


def _unparsed(cls: type[Message], data: bytes, reason: str, held_to: HoldsLimits | None) -> Malformed:
    """A request nested past protobuf's limit, or holding a string that is not UTF-8, is told
    so, with where: its parser says only "error parsing"."""
    found = why_unparsed(data, cls.DESCRIPTOR)
    if found is None:
        return Malformed(reason)
    what, where = found
    if what == DEEP:
        stored = f"{held_to.limits.max_nesting_depth} levels" if held_to is not None else "fewer"
        message = (
            f"nests deeper than the {PARSE_DEPTH} message levels protobuf parses (a google.protobuf.Struct takes "
            f"three a JSON level); a stored object is held to {stored} (max_nesting_depth)"
        )
        return Malformed(message, InvalidArgument(f"request {message}", [FieldViolation(where or "(request)", message)]))
    message = (
        "is not valid UTF-8, which a protobuf string must be (a JavaScript string cut inside a surrogate "
        "pair, half an emoji, encodes as such: cut it by code point)"
    )
    return Malformed(message, InvalidArgument(f"{where}: {message}", [FieldViolation(where, message)]))


def refusal(cls: type[Message], request: Malformed, name: str | None = None) -> InvalidArgument:
    """``name``: the message's name where the method knows it under another (a renamed copy)."""
    if request.error is not None:
        return request.error
    name = name or cls.DESCRIPTOR.full_name
    return InvalidArgument(
        f"request is not a valid {name}: {request.reason}", [FieldViolation("(request)", f"cannot be parsed as {name}")]
    )
