"""Server streams over the event log: every kind's ``watch``, one object's ``subscribe``.

A stream never holds a store transaction while it waits or sends: the
application's ``EventHub`` (``stigmer_core.pipeline.events``) reads each new
batch of events once and wakes the streams of the kinds it touched; each
stream then takes its events a page at a time from the hub's cache or, when
it is behind, from the durable log. Events come from the log, not from a
queue a slow reader could overflow, so no event is ever silently dropped; a
stream that falls behind the retained log ends with ABORTED and is told to
re-read and resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping
from typing import Any

import attrs
from google.protobuf import any_pb2
from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2
from stigmer_core.kinds.runtime import LABEL_INDEX, KindRuntime, ListFilter
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.answers import BlanksAnswer
from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.events import READS_LOG, TURN, Compacted, Cursor, EventHub, Idle, Positioned, unshared
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import Step, step
from stigmer_core.pipeline.turns import Place
from stigmer_core.store import keys

WATCH_SERVICE = "stigmer.commons.watch.v1.Watch"
WATCH_PATH = f"/{WATCH_SERVICE}/Watch"
WATCH_OPERATION = "watch"

POLL_SECONDS = 1.0
_CREATED = event_pb2.RESOURCE_EVENT_TYPE_CREATED
_UPDATED = event_pb2.RESOURCE_EVENT_TYPE_UPDATED
_DELETED = event_pb2.RESOURCE_EVENT_TYPE_DELETED
_TYPES = {
    _CREATED: watch_pb2.WATCH_EVENT_TYPE_ADDED,
    _UPDATED: watch_pb2.WATCH_EVENT_TYPE_MODIFIED,
    _DELETED: watch_pb2.WATCH_EVENT_TYPE_DELETED,
}
_BOOKMARK = watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
_SCOPE = "watch.scope"


def _hub(ctx: RequestContext) -> EventHub:
    if ctx.events is None:  # pragma: no cover - every Executor the framework builds has one
        raise errors.Unavailable("this server does not serve streams")
    return ctx.events


class _Follower:
    """A stream's reading loop: the kind's events from a cursor on, in log order.

    Iterating yields each event (with its position) and, when nothing has
    been sent for the bookmark interval, the ``Cursor`` reached, for a
    bookmark. The consumer calls ``sent()`` when it passes something on, so
    events it filters out do not hold bookmarks back. Ends when the caller
    goes away; raises UNAVAILABLE when the server stops. With ``yields_idle``,
    it yields an ``Idle`` where it would wait, for the consumer to pass on to
    a driver that waits without a thread (``RequestContext.yields_idle``).
    """

    def __init__(
        self,
        hub: EventHub,
        kind: str,
        cursor: Cursor,
        active: Callable[[], bool],
        partitions: Collection[str] | None = None,
        resume: Resume | None = None,
        opened: int | None = None,
        yields_idle: bool = False,
        on_end: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._yields_idle = yields_idle
        self._on_end = on_end
        self._resume = resume or _watch_again  # what its client reopens the stream with, in its own fields
        self._opened = opened  # the hub's ``ends`` when the call arrived
        self._hub = hub
        self._kind = kind
        self._partitions = partitions
        self._cursor = cursor
        self._active = active
        self._last_sent = time.monotonic()

    def sent(self) -> None:
        self._last_sent = time.monotonic()

    def __iter__(self) -> Iterator[Positioned | Cursor | Idle]:
        hub, kind = self._hub, self._kind
        settings = hub.settings
        sub = hub.subscribe(kind, self._opened, self._partitions)
        if self._on_end is not None:  # its caller gone or its deadline passed: out of the wait below at once
            self._on_end(sub.wake.set)
        place = Place()  # in line to read the log, kept while a due bookmark is sent

        def wanted() -> bool:
            return not sub.ended and self._active()

        try:
            while True:
                if sub.ended:
                    advice, point = self._resume(self._cursor)
                    raise errors.Unavailable(f"the server is shutting down; {advice}", metadata=point)
                if not self._active():
                    return
                sub.wake.clear()
                due = self._last_sent + settings.bookmark_seconds
                if self._yields_idle and not hub.cached(self._cursor):
                    yield READS_LOG  # the read below is of the store: its driver runs it on a thread
                page = hub.read(kind, self._cursor, self._partitions, wanted, due, place)
                if page is None:  # other streams' reads of the log went first: check the caller, then again
                    if time.monotonic() >= due:
                        yield self._cursor
                        self.sent()
                    continue
                events, after = page
                moved = after != self._cursor
                self._cursor = after
                yield from events
                if self._yields_idle and moved and after.complete < hub.head:  # a page of a catch-up
                    yield TURN
                idle = time.monotonic() - self._last_sent
                if idle >= settings.bookmark_seconds:
                    yield after
                    self.sent()
                elif not moved:  # nothing new: wait for the dispatcher, the caller's check or a bookmark
                    seconds = min(settings.poll_seconds, settings.bookmark_seconds - idle)
                    if self._yields_idle:
                        yield Idle(sub.wake, seconds)
                    else:
                        sub.wake.wait(seconds)
        except errors.Unavailable as exc:  # the store stopped answering: told where to resume, as at a stop
            advice, point = self._resume(self._cursor)
            if not exc.metadata.keys() & point.keys():
                exc.message = f"{exc.message}; {advice}"
                exc.args = (exc.message,)
                exc.metadata.update({name: str(value) for name, value in point.items()})
            raise
        finally:
            hub.leave(place)
            hub.unsubscribe(sub)


REVISION_AHEAD = "REVISION_AHEAD"
"""A resume from a revision the store has not reached: acted on as ``EVENTS_COMPACTED`` is."""

Resume = Callable[[Cursor], tuple[str, dict[str, int]]]
"""How a stream stopped at a cursor is opened again: advice for people, and the same request fields
as ``ErrorInfo`` metadata (lowerCamelCase), which a client in any language reads without parsing."""


def _watch_again(cursor: Cursor) -> tuple[str, dict[str, int]]:
    """How a kind's watch resumes from ``cursor``: within a revision a page ended in, by the position
    of the last event read there, or the client gets that revision's first events twice."""
    if cursor.index:
        position = cursor.index - 1
        advice = f"watch again with since_revision {cursor.revision} and since_position {position}"
        return advice, {"sinceRevision": cursor.revision, "sincePosition": position}
    return f"watch again with since_revision {cursor.complete}", {"sinceRevision": cursor.complete}


# -- every kind's watch ----------------------------------------------------------------


@attrs.frozen
class WatchScope:
    """Which objects a watch reports: the same conditions ``list`` applies."""

    org: str
    labels: Mapping[str, str]
    filters: tuple[tuple[ListFilter, str], ...]
    orgs: frozenset[str] | None = None
    """The orgs whose objects the caller's roles let it watch, when it may not see every
    org (a watch across orgs then reports only these, as ``list`` would)."""

    @property
    def needs_object(self) -> bool:
        return bool(self.org or self.labels or self.filters or self.orgs is not None)

    @property
    def partitions(self) -> Collection[str] | None:
        """The orgs whose pruned events this watch could have missed (None: any org's)."""
        if self.org:
            return (self.org,)
        return self.orgs

    def _visible(self, meta: Any) -> bool:
        if self.org and meta.org != self.org:
            return False
        return self.orgs is None or meta.org in self.orgs

    def matches(self, obj: Message) -> bool:
        meta: Any = obj.metadata  # type: ignore[attr-defined]
        if not self._visible(meta):
            return False
        if any(meta.labels.get(k) != v for k, v in self.labels.items()):
            return False
        return all((value,) in set(f.index.values(obj)) for f, value in self.filters)

    def matched_before(self, kind: KindRuntime, obj: Message, previous: set[bytes]) -> bool:
        """Whether the object matched before an update, from its index entries then.

        Every condition is an index entry (the org never changes), so this is
        ``matches`` read from the entries an update event keeps.
        """
        meta: Any = obj.metadata  # type: ignore[attr-defined]
        if not self._visible(meta):
            return False
        prefix = kind.key_prefix
        for key, value in self.labels.items():
            if keys.index_key(prefix, LABEL_INDEX, ("", key, value), meta.id) not in previous:
                return False
        for found, value in self.filters:
            scope = ("",) if found.index.org_scoped else ()
            if keys.index_key(prefix, found.index.name, (*scope, value), meta.id) not in previous:
                return False
        return True


def _resolve_filters(kind: KindRuntime, given: Mapping[str, str]) -> tuple[tuple[ListFilter, str], ...]:
    by_field = {f.field.path: f for f in kind.list_filters}
    resolved = []
    for name, value in sorted(given.items()):
        found = by_field.get(name)
        where = f'filters["{name}"]'
        if found is None:
            known = ", ".join(sorted(by_field)) or "none"
            raise errors.InvalidArgument.field(where, f"is not a list filter of {kind.name} (filters: {known})")
        enum_names = found.field.enum_names
        if enum_names is not None and value not in enum_names.values():
            names = ", ".join(n for number, n in sorted(enum_names.items()) if number)
            raise errors.InvalidArgument.field(where, f"'{value}' is not one of {names}")
        resolved.append((found, value))
    return tuple(resolved)


@step(Phase.VALIDATE, name="watch_scope")
def watch_scope(ctx: RequestContext) -> None:
    """Resolve the request's filters against the kind's list filters; the org goes to ``ctx.org``,
    where AUTHORIZE steps may narrow it before the stream reads it."""
    req: Any = ctx.request
    labels = dict(req.labels)
    validation.check_label_selector(ctx.kind, labels)
    ctx.scratch[_SCOPE] = (labels, _resolve_filters(ctx.kind, req.filters))
    ctx.org = req.org


Views = Callable[[Hashable, Callable[[], tuple[Any, int]]], Any]
"""``EventHub.views.get``: what streams send of an event, built once for all of them."""


def _parsed(kind: KindRuntime, event: event_pb2.ResourceEvent, position: int, views: Views) -> Message:
    """The event's object, parsed once for every stream that reads it (never changed: shared)."""
    parsed: Message = views(
        ("parsed", event.revision, position), lambda: (kind.parse(event.object), 2 * event.ByteSize())
    )
    return parsed


def _watch_event(
    kind: KindRuntime, scope: WatchScope, event: event_pb2.ResourceEvent, position: int, views: Views = unshared
) -> bytes | None:
    """The event as this watch sees it, serialized, or None when the object is not (and was not)
    in its scope. Streams sending the same event share one copy of it (``views``).

    An update that moves the object into the scope is ADDED, out of it DELETED
    (with the object as written), as a list before and after would show it.
    """
    shown_type = _TYPES.get(event.type, watch_pb2.WATCH_EVENT_TYPE_UNSPECIFIED)
    if scope.needs_object:
        obj = _parsed(kind, event, position, views)
        now = scope.matches(obj)
        if event.type == _UPDATED and event.index_keys_changed:
            before = scope.matched_before(kind, obj, set(event.previous_index_keys))
            if now != before:
                shown_type = watch_pb2.WATCH_EVENT_TYPE_ADDED if now else watch_pb2.WATCH_EVENT_TYPE_DELETED
            now = now or before
        if not now:
            return None

    def build() -> tuple[bytes, int]:
        raw = event.object
        if kind.redact is not None:
            obj = kind.parse(raw)
            kind.redact(obj)
            raw = obj.SerializeToString()
        shown = watch_pb2.WatchEvent(
            type=shown_type,
            revision=event.revision,
            object=any_pb2.Any(type_url=kind.type_url, value=raw),
            kind=kind.name,
            id=event.id,
            position=position,
            principal=event.principal,
        ).SerializeToString()
        return shown, len(shown)

    sent: bytes = views(("watch", event.revision, position, shown_type), build)
    return sent


def _more_in_revision(txn: Any, kind: KindRuntime, scope: WatchScope, revision: int, position: int) -> bool:
    """Whether ``revision`` may hold an event this watch would send after ``position``: one
    transaction's events, read only when a watch resumes inside a revision. Only events in the
    watch's scope count, so the first bookmark tells nothing of what other orgs wrote. A revision
    the log no longer holds (pruned) may have: the watch then answers that it was compacted."""
    seen = 0
    for found, payload in txn.events(revision - 1):
        if found != revision:
            break
        if seen > position:
            event = event_pb2.ResourceEvent.FromString(payload)
            if event.kind == kind.name and _watch_event(kind, scope, event, seen) is not None:
                return True
        seen += 1
    return seen == 0  # none of it is left (pruned): the resume must be told it was compacted


def _bookmark(kind: KindRuntime, revision: int) -> watch_pb2.WatchEvent:
    return watch_pb2.WatchEvent(type=_BOOKMARK, revision=revision, kind=kind.name)


@step(Phase.LOAD, name="watch_events")
def watch_events(ctx: RequestContext) -> None:
    """Stream the kind's events after ``since_revision`` (unset: from now), first a BOOKMARK of the start."""
    req: Any = ctx.request
    kind = ctx.kind
    hub = _hub(ctx)
    opened = hub.ends
    txn = ctx.store.txn
    head = txn.revision
    start = int(req.since_revision) if req.HasField("since_revision") else head
    if start > head:
        raise errors.InvalidArgument.field(
            "since_revision",
            f"{start} is ahead of the store's revision {head} (a store restored from a backup, or another "
            "store): open a new watch (from now), then list again",
            reason=REVISION_AHEAD,
            metadata={"sinceRevision": start, "storeRevision": head},
        )
    labels, filters = ctx.scratch.get(_SCOPE) or ({}, ())
    caller = ctx.caller
    orgs = None if caller.unrestricted else frozenset(o for o in caller.orgs if caller.can(ctx.access, o))
    scope = WatchScope(org=ctx.org, labels=labels, filters=filters, orgs=orgs)
    cursor = Cursor.after(start)
    if req.HasField("since_position"):
        if not req.HasField("since_revision"):
            raise errors.InvalidArgument.field("since_position", "needs since_revision")
        position = int(req.since_position)
        cursor = Cursor(start, position + 1)  # the rest of that revision's events
        if not _more_in_revision(txn, kind, scope, start, position):
            # the client has all of that revision: the first bookmark says so, rather than the
            # revision before it, which a client resuming from bookmarks would get again
            cursor = Cursor.after(start)
    if cursor.complete < head:
        compacted = txn.compacted_through(scope.partitions)  # its orgs' shares, of every kind: a share keeps no kinds
        if compacted >= cursor.revision:
            raise Compacted(start, compacted + 1)
    active = ctx.active
    views = hub.views.get
    yields_idle = ctx.yields_idle
    on_end = ctx.on_end

    def stream() -> Iterator[watch_pb2.WatchEvent | bytes | Idle]:
        yield _bookmark(kind, cursor.complete)
        follower = _Follower(
            hub, kind.name, cursor, active, scope.partitions, opened=opened, yields_idle=yields_idle, on_end=on_end
        )
        sent_in = 0  # the revision of the last event sent
        for item in follower:
            if isinstance(item, Idle):
                yield item
                continue
            if isinstance(item, Cursor):
                # A page that ended inside a revision leaves its cursor's ``complete`` one before
                # it: a bookmark of that, after events of the revision were sent, would have a
                # client resuming from it get them again. The next bookmark past it is sent.
                if item.complete >= sent_in:
                    yield _bookmark(kind, item.complete)
                continue
            event, position = item
            shown = _watch_event(kind, scope, event, position, views)
            if shown is not None:
                yield shown  # serialized once, for every stream sending it
                follower.sent()
                sent_in = event.revision

    ctx.response = stream()  # type: ignore[assignment]


# -- one object's subscribe --------------------------------------------------------------


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
    ``poll`` is kept for compatibility: streams now wake on the event hub.
    """

    def run(ctx: RequestContext) -> None:
        req: Any = ctx.request
        kind = ctx.kind
        object_id = str(getattr(req, id_field))
        current = ctx.store.require_id(kind, object_id, id_field)
        after = int(getattr(req, after_field)) if after_field else 0
        txn = ctx.store.txn
        if after_field and after > txn.revision:  # it would wait for revisions that may never come
            raise errors.InvalidArgument.field(
                after_field,
                f"{after} is ahead of the store's revision {txn.revision} (a store restored from a backup, or "
                "another store): get the object again and resume from its resource_version",
                reason=REVISION_AHEAD,
                metadata={_camel(after_field): after, "storeRevision": txn.revision},
            )
        version = getattr(current.metadata, "resource_version", 0)  # type: ignore[attr-defined]
        start = after or txn.revision
        partitions = (current.metadata.org,)  # type: ignore[attr-defined]
        compacted = txn.compacted_through(partitions)  # another org's pruned events held nothing of it
        if after and compacted > after:
            if not (kind.shape.has_resource_version and version <= after):
                raise _too_old(after, compacted + 1, after_field)
            # unchanged since ``after`` (read in this snapshot): the pruned events held nothing of
            # it, so the resume follows from here; else the advice (resume from the version a get
            # answers) would be refused again for an object nobody has written since
            start = txn.revision
        hub = _hub(ctx)
        opened = hub.ends
        initial = None if after else current
        active = ctx.active
        on_end = ctx.on_end
        # resumed at or past a final state: nothing more will ever come
        finished = bool(after) and until is not None and until(current) and version <= after

        views = hub.views.get
        operation = ctx.operation
        yields_idle = ctx.yields_idle

        sent_in = [0]  # the revision of the last state sent

        def resume(cursor: Cursor) -> tuple[str, dict[str, int]]:
            if after_field:  # nothing of the object was left unsent up to there, nor past a state sent
                revision = max(cursor.complete, sent_in[0])
                return f"call {operation} again with {after_field} {revision}", {_camel(after_field): revision}
            return f"call {operation} again (it starts with the object as it is then)", {}

        def states() -> Iterator[Message | bytes | Idle]:
            if finished:
                return
            if initial is not None:
                yield _shown(kind, initial)
                if until is not None and until(initial):
                    return
            try:
                follower = _Follower(
                    hub, kind.name, Cursor.after(start), active, partitions, resume, opened, yields_idle, on_end
                )
                for item in follower:
                    if isinstance(item, Idle):
                        yield item
                        continue
                    if isinstance(item, Cursor) or item[0].id != object_id:
                        continue
                    event, position = item
                    if event.type == _DELETED:
                        return
                    yield _state(kind, event, position, views)  # serialized once, for every subscriber
                    sent_in[0] = event.revision
                    if until is not None and until(_parsed(kind, event, position, views)):
                        return
            except Compacted as exc:
                raise _too_old(exc.since, exc.oldest, after_field) from None

        ctx.response = states()  # type: ignore[assignment]

    return BlanksAnswer("watch_object", Phase.LOAD, run)  # each state is blanked as it is sent


def _shown(kind: Any, obj: Message) -> Message:
    if kind.redact is not None:
        kind.redact(obj)
    return obj


def _state(kind: KindRuntime, event: event_pb2.ResourceEvent, position: int, views: Views) -> bytes:
    """The object an event wrote, as a subscriber is sent it (redacted), serialized."""

    def build() -> tuple[bytes, int]:
        raw = event.object
        if kind.redact is not None:
            raw = _shown(kind, kind.parse(raw)).SerializeToString()
        return raw, len(raw)

    sent: bytes = views(("state", event.revision, position), build)
    return sent


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _too_old(after: int, oldest: int, after_field: str | None) -> Compacted:
    advice = "get the object again and resume from its resource_version"
    return Compacted(after, oldest, advice, _camel(after_field or "after_revision"))
