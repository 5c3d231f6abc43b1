"""Server streams over the event log.

A stream never holds a store transaction while it waits or yields: it reads
the events committed since its last revision into memory, lets the snapshot
go, then sends them. Events come from the durable log, not from an in-memory
queue, so a slow subscriber is never silently dropped; one that falls behind
the log's retention window gets ABORTED and is told to re-read and resume
from the object's ``resource_version``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep, Step

POLL_SECONDS = 1.0
_DELETED = event_pb2.RESOURCE_EVENT_TYPE_DELETED


def watch_object(
    *,
    id_field: str = "value",
    after_field: str | None = None,
    until: Callable[[Message], bool] | None = None,
    poll: float = POLL_SECONDS,
) -> Step:
    """A step for a server-streaming rpc that follows one object.

    The stream sends the object as it is now, then every later state, in
    revision order, and ends after a state for which ``until`` is true, or
    when the object is deleted. With ``after_field`` set and non-zero in the
    request, it resumes instead: it sends only the states written after that
    revision (a client passes the ``resource_version`` it saw last).
    """

    def run(ctx: RequestContext) -> None:
        req: Any = ctx.request
        kind = ctx.kind
        object_id = str(getattr(req, id_field))
        if not object_id:
            raise errors.InvalidArgument.field(id_field, "is required")
        current = ctx.store.require(kind, object_id)
        after = int(getattr(req, after_field)) if after_field else 0
        txn = ctx.store.txn
        oldest = txn.oldest_event_revision()
        if after and oldest and after + 1 < oldest:
            raise _too_old(after, oldest)
        engine = ctx.engine
        assert engine is not None
        start = after or txn.revision
        initial = None if after else current
        active = ctx.active
        version = getattr(current.metadata, "resource_version", 0)  # type: ignore[attr-defined]
        # resumed at or past a final state: nothing more will ever come
        finished = bool(after) and until is not None and until(current) and version <= after

        def states() -> Iterator[Message]:
            if finished:
                return
            if initial is not None:
                yield _shown(kind, initial)
                if until is not None and until(initial):
                    return
            last = start
            while active():
                latest = engine.wait_for_revision(last, poll)
                if latest <= last:
                    continue
                found: list[Message] = []
                ended = False
                with engine.read() as snapshot:
                    oldest_now = snapshot.oldest_event_revision()
                    if oldest_now and last + 1 < oldest_now:
                        raise _too_old(last, oldest_now)
                    for revision, payload in snapshot.events(last):
                        last = revision
                        event = event_pb2.ResourceEvent.FromString(payload)
                        if event.id != object_id or event.kind != kind.name:
                            continue
                        if event.type == _DELETED:
                            ended = True
                            break
                        found.append(kind.parse(event.object))
                for state in found:
                    yield _shown(kind, state)
                    if until is not None and until(state):
                        return
                if ended:
                    return

        ctx.response = states()  # type: ignore[assignment]

    return FunctionStep("watch_object", Phase.LOAD, run)


def _shown(kind: Any, obj: Message) -> Message:
    if kind.redact is not None:
        kind.redact(obj)
    return obj


def _too_old(after: int, oldest: int) -> errors.Conflict:
    return errors.Conflict(
        f"revision {after} is older than the event log keeps (oldest: {oldest}); "
        "get the object again and resume from its resource_version"
    )
