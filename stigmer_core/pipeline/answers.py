"""What an rpc sends, with its kind's secrets blanked whatever step built it.

The ``redact`` step blanks an answer at ``Phase.REDACT``, which is enough for the standard
operations as the framework builds them: nothing after it but ``respond`` touches the answer. A
kind's or a plugin's steps may answer after it (a ``RESPOND`` step, on any rpc), and a custom
rpc may answer with a stream (a generator, which no step can blank before it is sent). So the
registry ends such a pipeline with ``blank_sent``, which runs after every step, whatever its
phase, and blanks each message as it leaves. The choice is made once, when the pipeline is built:
a pipeline ending with ``redact`` (or a ``REDACT`` step of the kind's, which decides what is
shown), a kind with nothing secret, and a custom rpc whose steps already blank all they send pay
nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
from google.protobuf.message import Message

from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.pipeline.held import blank_held
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep


@attrs.frozen
class BlanksAnswer(FunctionStep):
    """A step whose answer is blanked as it is built (a ``list_by`` page, a ``watch_object``
    stream): a custom rpc whose steps end with it needs no ``blank_sent``."""


def shown(kind: KindRuntime, answer: Message) -> Message:
    """``answer`` as it may leave the server. An object of the kind is copied, then blanked (the
    one answered may be the store's, or the transaction's), and only when it holds something to
    blank; a message of the rpc's own holding objects of the kind (a page of clones, a map of
    them, hits holding them, an ``Any`` packing one) was built for this answer alone, and holds
    copies of what it was given, so it is blanked in place (``held``)."""
    hide = kind.redact
    if hide is None:
        return answer
    if type(answer) is kind.resource_cls:
        if not kind.hides(answer):
            return answer
        copy = kind.resource_cls()
        copy.CopyFrom(answer)
        hide(copy)
        return copy
    hides = kind.hides

    def blank(obj: Message) -> None:
        if hides(obj):
            hide(obj)

    blank_held(answer, kind.resource_cls, blank)
    return answer


class _Blanking:
    """A stream's responses, each blanked as it is sent. Anything that is not a message (bytes an
    event was serialized to once, or what a step yields by mistake) passes as it is: the stream's
    serializer decides what it makes of it. ``close`` reaches the stream it wraps, so a cancelled
    call still ends a generator's subscription at once."""

    __slots__ = ("_kind", "_next", "close")

    def __init__(self, kind: KindRuntime, messages: Iterator[Any], close: Callable[[], object]) -> None:
        self._kind = kind
        self._next = messages.__next__
        self.close = close

    def __iter__(self) -> _Blanking:
        return self

    def __next__(self) -> Any:
        sent = self._next()
        return shown(self._kind, sent) if isinstance(sent, Message) else sent


def _nothing() -> None:
    return None


def _blank_unary(ctx: Any) -> None:
    answer = ctx.response
    if isinstance(answer, Message):
        ctx.response = shown(ctx.kind, answer)


def _blank_stream(ctx: Any) -> None:
    answer = ctx.response
    if answer is None or isinstance(answer, (bytes, str)):
        return
    if isinstance(answer, Message):
        ctx.response = shown(ctx.kind, answer)
        return
    try:
        messages = iter(answer)
    except TypeError:
        return  # not a stream: sending it fails as it did before
    # An answer without ``close`` of its own (an object whose ``__iter__`` is a generator) is ended
    # through the iterator it gave: ``yield from`` closed that one when the call was cancelled.
    close: Callable[[], object] = getattr(answer, "close", None) or getattr(messages, "close", None) or _nothing
    ctx.response = _Blanking(ctx.kind, messages, close)


def blank_sent(streaming: bool) -> FunctionStep:
    """The last step of a custom rpc of a kind with secrets: blanks what it answers (``streaming``:
    each message of the stream it answers, as it is sent)."""
    return FunctionStep("blank_sent", Phase.RESPOND, _blank_stream if streaming else _blank_unary)
