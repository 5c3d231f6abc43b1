"""One reader of the event log per application, and the cursors streams keep.

Every open stream (a kind's ``watch``, an execution's ``subscribe``) needs
the events committed after its own position. Waking every stream on every
commit to re-read the log would cost one store read per stream per commit,
so one dispatcher thread waits on ``Store.wait_for_revision``, reads each
new batch of events once into a small shared cache (bounded by count and
bytes) and wakes only the streams of the kinds those events touched.

A stream keeps its own cursor. When the cache covers it, it reads from the
cache; when it is behind the cache (a slow reader, a resume from an old
revision), it reads the durable log in bounded pages, one read transaction
per page, so a reader that is behind never grows the daemon's memory by its
backlog. Only the Store protocol is used (``events``,
``compacted_through``, ``revision``, ``wait_for_revision``), so this
works on any engine, and across replicas when the engine's
``wait_for_revision`` wakes on other daemons' commits.

The log may not hold a commit's events by the time the dispatcher reads it:
with retention 0 each commit prunes the ones before it, its own group
commit's included. A store that hands its commits over (``HandsOverEvents``)
gives the dispatcher each commit's events as it commits, and those are served
from the cache whatever the log kept since; the log is read only for commits
not handed over (another daemon's), and a gap found there ends the cache, so
a stream behind it reads the log and is told what it lost.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any

import attrs

from stigmer_core import errors
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.pipeline.turns import Place, Turns
from stigmer_core.store.protocol import BoundsStreamReads, HandsOverEvents, Store, WakesWaiters

log = logging.getLogger(__name__)

ResourceEvent = event_pb2.ResourceEvent
Positioned = tuple[ResourceEvent, int]
"""An event and its position among its revision's events (0 first)."""


BOOKMARK_SECONDS = (0.1, 86_400.0)
"""The range of ``STIGMER_WATCH_BOOKMARK_SECONDS``: an idle stream sends a BOOKMARK each time,
so a microsecond kept a daemon's CPU busy with one idle watch, and a day is already far past any
proxy's idle timeout the bookmark exists to keep a stream open through."""


def _env_number(name: str, default: float) -> float:
    """A number from the environment; ``nan`` and ``inf`` parse as floats but bound nothing."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.StartupError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise errors.StartupError(f"{name}={raw!r} is not a finite number")
    return value


def _env_whole(name: str, default: int, least: int, zero: str = "") -> int:
    """A count from the environment: ``2.5`` streams is a mistake to say, not to round. ``zero``
    says what 0 would do where an operator could take it for "no limit"."""
    value = _env_number(name, default)
    if value != int(value):
        raise errors.StartupError(f"{name}={os.environ.get(name)!r} is not a whole number")
    if value < least:
        why = f": {zero}" if value == 0 and zero else ""
        raise errors.StartupError(f"{name} must be {least} or more, not {os.environ.get(name)}{why}")
    return int(value)


@attrs.frozen
class StreamSettings:
    """Limits and timing of server streams (docs/design.md, Watch and streams)."""

    max_streams: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    """Open server streams (watch and subscribe) at once; the next gets RESOURCE_EXHAUSTED. 0 is
    refused: it would refuse every stream (every watch, every runner), where 0 for an org's
    quota means no limit."""
    max_streams_per_caller: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    """Open server streams of one token's principal at once (the local administrator: no share)."""
    max_streams_per_org: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    """Open server streams of one org's tokens together, whatever their number (an admin can make
    tokens: without this, one org could hold every slot other orgs' runners need)."""
    bookmark_seconds: float = attrs.field(
        default=10.0,
        validator=[attrs.validators.ge(BOOKMARK_SECONDS[0]), attrs.validators.le(BOOKMARK_SECONDS[1])],
    )
    """A stream with nothing to send sends a BOOKMARK this often."""
    page_events: int = 256
    """Events one stream reads from the log per read transaction."""
    page_bytes: int = 1 << 20
    """Bytes of events one stream reads from the log per read transaction."""
    cache_events: int = 4096
    """Recent events the dispatcher keeps for streams that are caught up."""
    cache_bytes: int = 16 << 20
    """Bytes of those events, and, apart, of what streams send of them (``SharedViews``)."""
    poll_seconds: float = 1.0
    """How often a waiting stream checks that its caller is still there."""
    observe_seconds: float = 0.1
    """With no stream open, the dispatcher reads new commits for ``on_change`` callbacks alone (the
    token cache's) at most this often: a commit after a quiet spell is read at once, and the ones
    that follow it within this time together, in one read. Read one by one, following another
    daemon's serial creates cost a team server's daemon 0.9 ms of CPU each; a callback comes this
    much later at most."""

    @classmethod
    def from_env(cls) -> StreamSettings:
        """``STIGMER_MAX_STREAMS``, ``STIGMER_MAX_STREAMS_PER_CALLER``, ``STIGMER_MAX_STREAMS_PER_ORG``
        and ``STIGMER_WATCH_BOOKMARK_SECONDS`` override the defaults; a value out of range stops
        the start naming its variable."""
        default = cls()
        max_streams = _env_whole(
            "STIGMER_MAX_STREAMS",
            default.max_streams,
            1,
            zero="0 would refuse every stream (every watch and every runner's), not lift the limit; "
            "set a large number for no practical limit",
        )
        bookmark = _env_number("STIGMER_WATCH_BOOKMARK_SECONDS", default.bookmark_seconds)
        if not BOOKMARK_SECONDS[0] <= bookmark <= BOOKMARK_SECONDS[1]:
            raise errors.StartupError(
                f"STIGMER_WATCH_BOOKMARK_SECONDS must be from {BOOKMARK_SECONDS[0]:g} to "
                f"{BOOKMARK_SECONDS[1]:,.0f} seconds, not {os.environ.get('STIGMER_WATCH_BOOKMARK_SECONDS')}"
            )
        return cls(
            max_streams=max_streams,
            max_streams_per_caller=_env_whole("STIGMER_MAX_STREAMS_PER_CALLER", default.max_streams_per_caller, 1),
            max_streams_per_org=_env_whole("STIGMER_MAX_STREAMS_PER_ORG", default.max_streams_per_org, 1),
            bookmark_seconds=bookmark,
        )


class StreamLimit:
    """Admits at most ``limit`` open streams, at most ``per_caller`` of one principal and at most
    ``per_org`` of one org's callers; past any, RESOURCE_EXHAUSTED at once (never a wait).

    The slots are shared by every org of a team server, so without a share per
    caller one token (a viewer's, say) could hold them all and refuse the watches
    other orgs' runners wait for work on; and since an org's admin can make tokens,
    without a share per org one org could. The local administrator has no share:
    it owns the machine, and the whole limit.
    """

    def __init__(self, limit: int, per_caller: int | None = None, per_org: int | None = None) -> None:
        self.limit = limit
        self.per_caller = limit if per_caller is None else per_caller
        self.per_org = limit if per_org is None else per_org
        self._slots = threading.BoundedSemaphore(limit) if limit > 0 else None
        self._held: dict[str, int] = {}
        self._held_by_org: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, principal: str | None = None, orgs: Sequence[str] = ()) -> None:
        """Take a slot for ``principal`` of ``orgs`` (None: the local administrator, bound by the
        limit alone)."""
        if self._slots is None or not self._slots.acquire(blocking=False):
            raise errors.ResourceExhausted(
                f"too many open streams (limit {self.limit}, setting STIGMER_MAX_STREAMS); "
                "close a stream or retry later",
                reason="STREAM_LIMIT",
                metadata={"limit": self.limit, "setting": "STIGMER_MAX_STREAMS"},
            )
        if principal is None:
            return
        with self._lock:
            held = self._held.get(principal, 0)
            full = next((org for org in orgs if self._held_by_org.get(org, 0) >= self.per_org), None)
            if held < self.per_caller and full is None:
                self._held[principal] = held + 1
                for org in orgs:
                    self._held_by_org[org] = self._held_by_org.get(org, 0) + 1
                return
        self._slots.release()
        if full is not None:
            raise errors.ResourceExhausted(
                f"org '{full}' has {self.per_org} streams open, as many as one org may (setting "
                "STIGMER_MAX_STREAMS_PER_ORG); close one of them first",
                reason="STREAM_LIMIT",
                metadata={"limit": self.per_org, "setting": "STIGMER_MAX_STREAMS_PER_ORG", "org": full},
            )
        raise errors.ResourceExhausted(
            f"{principal} has {held} streams open, as many as one caller may (setting "
            "STIGMER_MAX_STREAMS_PER_CALLER); close one of them first",
            reason="STREAM_LIMIT",
            metadata={"limit": self.per_caller, "setting": "STIGMER_MAX_STREAMS_PER_CALLER", "principal": principal},
        )

    def release(self, principal: str | None = None, orgs: Sequence[str] = ()) -> None:
        if self._slots is None:
            return
        if principal is not None:
            with self._lock:
                _drop(self._held, principal)
                for org in orgs:
                    _drop(self._held_by_org, org)
        self._slots.release()


def _drop(held: dict[str, int], key: str) -> None:
    left = held[key] - 1
    if left:
        held[key] = left
    else:
        del held[key]


@attrs.frozen(order=True)
class Cursor:
    """The position of the next event a stream wants: revision, then index within it.

    Events of one transaction share a revision, so a page may end inside a
    revision; ``index`` says how many of that revision's events are behind.
    """

    revision: int
    index: int = 0

    @classmethod
    def after(cls, revision: int) -> Cursor:
        return cls(revision + 1, 0)

    @property
    def complete(self) -> int:
        """The newest revision whose every event is behind this cursor."""
        return self.revision - 1


class Compacted(errors.Conflict):
    """The events after ``since`` are no longer in the log (ABORTED): list again and resume."""

    def __init__(
        self,
        since: int,
        oldest: int,
        advice: str = "open a new watch (from now), then list again",
        cursor: str = "sinceRevision",
    ) -> None:
        # ``cursor`` names the revision as the refused request's field did (a subscribe's
        # ``after_revision``), so a client reads back what it sent under the name it sent it by
        super().__init__(
            f"revision {since} compacted (oldest retained: {oldest}); {advice}",
            reason="EVENTS_COMPACTED",
            metadata={cursor: since, "oldestRevision": oldest},
        )
        self.since = since
        self.oldest = oldest


@attrs.frozen
class _Entry:
    revision: int
    index: int
    kind: str
    size: int
    event: ResourceEvent
    org: str = ""
    """The object's org ("": not known, as in events written before it was kept)."""


@attrs.frozen
class _Commit:
    """One commit the store handed over: its revisions (``after`` < r <= ``through``), its events."""

    after: int
    through: int
    events: list[tuple[int, bytes]]
    size: int


class Wake:
    """A stream's wake-up call: the dispatcher sets it, and a thread waits on it, or an event loop
    is called back (``then``) by whoever sets it, so a stream served on the loop waits holding no
    thread. A wake is only a hint; the one who waits looks again whatever woke it."""

    __slots__ = ("_event", "_then")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._then: Callable[[], None] | None = None

    def set(self) -> None:
        self._event.set()
        then = self._then  # read after the flag: a caller that set it and then saw the flag clear is called
        if then is not None:
            try:
                then()
            except Exception:  # the loop is gone (a server stopping): its stream looks at its timeout anyway
                log.debug("a stream's wake-up could not be given", exc_info=True)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def then(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (from the setting thread) at each ``set`` until it is replaced, or None."""
        self._then = callback


@attrs.frozen
class Idle:
    """What a stream yields where it would wait, when its driver waits itself
    (``RequestContext.yields_idle``): an event loop that serves the stream inline awaits the wake
    (or ``seconds``) and then asks the stream for more, with no thread parked in between. With no
    wake it waits for nothing: ``TURN``, the loop's other calls go first; ``READS_LOG``, the
    stream's next step reads the store's log, which the driver runs on a thread."""

    wake: Wake | None
    seconds: float
    reads_log: bool = False

    def wait(self) -> None:
        if self.wake is not None:
            self.wake.wait(self.seconds)


TURN = Idle(None, 0.0)
"""Yielded after each page of a stream catching up from the cache: a watch whose labels, filters
or kind leave out every event of a page sends nothing for it, and would hand the loop back to
no one until it caught up."""
READS_LOG = Idle(None, 0.0, reads_log=True)
"""Yielded before a page read from the store's log (a stream behind the cache: a resume from far
back): many events read and parsed at once, up to 16 pages' worth for a page of the stream's
own. On the event loop, several such catch-ups held every other call, health checks included,
for hundreds of milliseconds; on a thread the GIL is shared with the loop as it goes."""


class Subscription:
    """A stream's registration: woken when an event of its kind (and of one of its ``orgs``, when
    given) arrives, or when it must end.

    A wake is only a hint: a stream not woken reads from its cursor at its next poll all the same.
    Waking every stream of a kind for every event cost about 80 µs per stream an event was not for
    (a thread woken, the event read and dropped): on a team server, each org's runners were woken
    by every other org's writes."""

    __slots__ = ("ended", "kind", "orgs", "wake")

    def __init__(self, kind: str, orgs: frozenset[str] | None = None) -> None:
        self.kind = kind
        self.orgs = orgs
        self.wake = Wake()
        self.ended = False

    def wants(self, orgs: set[str]) -> bool:
        """Whether events of ``orgs`` ("" for an event whose org is not known) may be for it."""
        return self.orgs is None or "" in orgs or not self.orgs.isdisjoint(orgs)


class SharedViews:
    """What streams send of an event, built once for every stream that sends it.

    A write of a large object with many streams open made each stream parse
    the object and build and serialize its own copy of the message, all at
    once on their own threads: a 2 MB object and 200 watches took a daemon
    from 80 MB to 1.3 GB. A view (a serialized message, a parsed object used
    only to be read) is built under one lock by the first stream that needs
    it and handed to the others; the views kept are bounded in bytes (the
    newest is always kept, so a bound smaller than one object still shares it).
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._views: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        """The view under ``key``, built by ``build`` (the view and its size) when none is kept."""
        with self._lock:
            found = self._views.get(key)
            if found is not None:
                self._views.move_to_end(key)
                return found[0]
            view, size = build()
            self._views[key] = (view, size)
            self._bytes += size
            while self._bytes > self._max_bytes and len(self._views) > 1:
                self._bytes -= self._views.popitem(last=False)[1][1]
            return view


def _append(fresh: list[_Entry], events: Sequence[tuple[int, bytes]], after: int) -> None:
    """Parse ``events`` (revision, payload; oldest first) after revision ``after`` into ``fresh``."""
    previous, index = 0, 0
    for revision, payload in events:
        if revision <= after:
            continue
        index = index + 1 if revision == previous else 0
        previous = revision
        event = ResourceEvent.FromString(payload)
        fresh.append(_Entry(revision, index, event.kind, len(payload), event, event.org))


def unshared(key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
    """``SharedViews.get`` for a caller with no hub to share with: built each time."""
    return build()[0]


class EventHub:
    """The per-application event dispatcher (started by the first subscription)."""

    def __init__(self, store: Store, settings: StreamSettings | None = None) -> None:
        self.store = store
        self.settings = settings or StreamSettings()
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._observers: dict[str, tuple[Callable[[], None], ...]] = {}
        """Callbacks of ``on_change``, by kind."""
        self._read_at = -math.inf  # never: a machine up less than observe_seconds reads its first commit at once too
        """When the dispatcher last read new commits (``time.monotonic``)."""
        self._hurry = threading.Event()
        """Ends the dispatcher's gathering of commits for callbacks (``observe_seconds``): a stream came."""
        self._cache: deque[_Entry] = deque()
        self._cache_bytes = 0
        self._floor = 0
        """The cache holds every event with a revision above this (up to ``_head``)."""
        self._head = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ends = 0
        self._handed: deque[_Commit] = deque()
        """Commits the store handed over (``HandsOverEvents``) that the dispatcher has not taken."""
        self._handed_events = 0
        self._handed_bytes = 0
        self._handed_lock = threading.Lock()
        self.views = SharedViews(self.settings.cache_bytes)
        self.log_turns = Turns(store.stream_read_slots) if isinstance(store, BoundsStreamReads) else None
        """Streams' reads of the durable log take turns here on a store whose connections are
        few and shared with unary calls; the dispatcher's one reader does not wait among them."""

    @property
    def closed(self) -> bool:
        return self._closed

    # -- subscriptions ---------------------------------------------------------
    @property
    def ends(self) -> int:
        """How many times ``end_streams`` ran: a stream notes it when its call arrives."""
        return self._ends

    def subscribe(
        self, kind: str, opened: int | None = None, orgs: Collection[str] | None = None
    ) -> Subscription:
        """Register a stream of ``kind`` (of ``orgs``' objects; None: every org's). ``opened`` is
        ``ends`` as it was when its call arrived: a stream that was opened before a stop but
        subscribes after it (it was still sending its first message) is ended at once, or it
        would wait out the stop's grace period."""
        sub = Subscription(kind, None if orgs is None else frozenset(orgs))
        with self._lock:
            if self._closed:
                raise errors.Unavailable("the server is shutting down")
            sub.ended = opened is not None and opened != self._ends
            self._subs.setdefault(kind, set()).add(sub)
            self._start()
        self._hurry.set()
        return sub

    def on_change(self, kind: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the dispatcher reads events of ``kind`` (this daemon's
        commits or another's, on a shared store) or finds a gap in the log where some may have
        been lost; start the dispatcher. What a daemon keeps in memory of a kind's objects (its
        token cache) is dropped this way when another daemon changes them. Every change committed
        after this returns is followed by a call. It runs in the dispatcher's thread: quick, and
        what it raises is logged."""
        with self._lock:
            if self._closed:
                return
            self._observers[kind] = (*self._observers.get(kind, ()), callback)
            self._start()

    def start(self) -> None:
        """Start the dispatcher, if it is not running. A stream calls this before it takes the
        snapshot its cursor comes from: the cache then begins no later than the cursor, so a
        stream from now reads every later change from the cache (with retention 0 the log
        holds none of them for long)."""
        with self._lock:
            if not self._closed:
                self._start()

    def _start(self) -> None:
        if self._thread is not None:
            return
        if isinstance(self.store, HandsOverEvents):
            self.store.follow_commits(self._take_commit)  # before the head is read: no commit falls between
        with self.store.read() as txn:
            self._head = self._floor = txn.revision
        self._thread = threading.Thread(target=self._run, name="stigmer-events", daemon=True)
        self._thread.start()

    def _take_commit(self, after: int, through: int, events: list[tuple[int, bytes]]) -> None:
        """A commit of this daemon's store, kept for the dispatcher (called in the committing thread).

        Kept within the cache's bounds: past them the oldest go, and the dispatcher
        reads those revisions from the log, as it would have without them."""
        commit = _Commit(after, through, events, sum(len(payload) for _, payload in events))
        settings = self.settings
        with self._handed_lock:
            handed = self._handed
            handed.append(commit)
            self._handed_events += len(events)
            self._handed_bytes += commit.size
            while len(handed) > 1 and (
                self._handed_events > settings.cache_events or self._handed_bytes > settings.cache_bytes
            ):
                self._drop_handed()

    def _drop_handed(self) -> None:
        gone = self._handed.popleft()
        self._handed_events -= len(gone.events)
        self._handed_bytes -= gone.size

    def cached(self, cursor: Cursor) -> bool:
        """Whether ``read`` answers ``cursor`` from the cache, without reading the store."""
        with self._lock:
            return self._thread is not None and cursor.revision > self._floor

    @property
    def head(self) -> int:
        """The newest revision the dispatcher has read (its cache ends there)."""
        return self._head

    def subscribed(self, kind: str) -> int:
        """Streams of ``kind`` subscribed now: a stream that ended must have let go of its own."""
        with self._lock:
            return len(self._subs.get(kind, ()))

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            found = self._subs.get(sub.kind)
            if found is not None:
                found.discard(sub)
                if not found:
                    del self._subs[sub.kind]

    def end_streams(self) -> None:
        """End every open stream now (each answers UNAVAILABLE); later ones may still open."""
        with self._lock:
            self._ends += 1
            subs = [sub for group in self._subs.values() for sub in group]
        for sub in subs:
            sub.ended = True
            sub.wake.set()

    def close(self) -> None:
        """End every stream and stop the dispatcher."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._hurry.set()
        if thread is not None and isinstance(self.store, HandsOverEvents):
            self.store.unfollow_commits(self._take_commit)
        self.end_streams()
        if thread is None:
            return
        until = time.monotonic() + self.settings.poll_seconds * 2 + 1
        while isinstance(self.store, WakesWaiters) and thread.is_alive() and time.monotonic() < until:
            self.store.wake_waiters()  # the dispatcher, out of its wait for the next commit (again, had it
            thread.join(0.05)  # not begun to wait when woken)
        thread.join(timeout=max(0.0, until - time.monotonic()))

    # -- the dispatcher ----------------------------------------------------------
    def _run(self) -> None:
        while not self._closed:
            try:
                self._step()
            except errors.Unavailable as exc:  # the database is away: said once per try, without a traceback
                log.warning("event dispatcher: cannot read the event log now: %s", exc.message)
                self._wake_all()
                threading.Event().wait(self.settings.poll_seconds)
            except Exception:  # pragma: no cover - the store failed under us; streams read the log themselves
                log.exception("event dispatcher: reading the event log failed")
                self._wake_all()
                threading.Event().wait(self.settings.poll_seconds)

    def _step(self) -> None:
        head = self._head
        latest = self.store.wait_for_revision(head, self.settings.poll_seconds)
        if self._closed or latest <= head:
            return
        if not self._subs:  # for callbacks alone: at most one read per observe_seconds, the commits since in it
            early = self._read_at + self.settings.observe_seconds - time.monotonic()
            if early > 0:
                self._hurry.wait(early)
                self._hurry.clear()
                if self._closed:
                    return
                latest = self.store.wait_for_revision(latest, 0)
        self._read_at = time.monotonic()
        with self._handed_lock:
            handed = [commit for commit in self._handed if head < commit.through <= latest]
        fresh: list[_Entry] = []
        lost = 0
        """Events of revisions up to this one may be missing from ``fresh``."""
        at = head
        for commit in handed:
            if commit.after > at:  # another daemon's commits, or ones handed over before the hub listened
                lost = max(lost, self._read_log(fresh, at, commit.after))
            _append(fresh, commit.events, at)
            at = commit.through
        if at < latest:
            lost = max(lost, self._read_log(fresh, at, latest))
        with self._handed_lock:
            while self._handed and self._handed[0].through <= latest:
                self._drop_handed()
        with self._lock:
            if lost:
                # Events the cache cannot hold (read too late: pruned, or too many to cache) end
                # it there: streams before ``lost`` read the log, which tells them if they lost any.
                self._cache.clear()
                self._cache_bytes = 0
                self._floor = lost
                fresh = [entry for entry in fresh if entry.revision > lost]
                woken = [sub for group in self._subs.values() for sub in group]
                told = [callback for group in self._observers.values() for callback in group]
            else:
                orgs_of: dict[str, set[str]] = {}
                for entry in fresh:
                    orgs_of.setdefault(entry.kind, set()).add(entry.org)
                woken = [sub for kind, orgs in orgs_of.items() for sub in self._subs.get(kind, ()) if sub.wants(orgs)]
                told = [callback for kind in orgs_of for callback in self._observers.get(kind, ())]
            for entry in fresh:
                self._cache.append(entry)
                self._cache_bytes += entry.size
            limit = self.settings.cache_events
            while self._cache and (len(self._cache) > limit or self._cache_bytes > self.settings.cache_bytes):
                self._floor = self._cache[0].revision  # whole revisions only: the rest of it goes too
                while self._cache and self._cache[0].revision <= self._floor:
                    self._cache_bytes -= self._cache.popleft().size
            self._head = latest
        for sub in woken:
            sub.wake.set()
        for callback in told:
            try:
                callback()
            except Exception:  # one observer's fault ends neither the dispatcher nor the others' calls
                log.exception("event dispatcher: a change callback failed")

    def _read_log(self, fresh: list[_Entry], after: int, through: int) -> int:
        """Add the log's events of revisions after ``after`` up to ``through`` to ``fresh``;
        answer 0, or ``through`` when some may be missing (pruned, or more than the cache holds)."""
        limit = self.settings.cache_events
        with self.store.read() as txn:
            # An org's events can be pruned as soon as they are written (the org holding the most
            # loses its oldest first): a gap the cache must not paper over for the streams it serves.
            if txn.revision < through or txn.compacted_through(None) > after:
                return through
            found: list[tuple[int, bytes]] = []
            for revision, payload in txn.events(after):
                if revision > through:
                    break
                if len(found) >= limit and revision != found[-1][0]:
                    return through
                found.append((revision, payload))
        _append(fresh, found, after)
        return 0

    def _wake_all(self) -> None:
        with self._lock:
            woken = [sub for group in self._subs.values() for sub in group]
        for sub in woken:
            sub.wake.set()

    # -- reading -------------------------------------------------------------------
    def read(
        self,
        kind: str,
        cursor: Cursor,
        partitions: Collection[str] | None = None,
        wanted: Callable[[], bool] = lambda: True,
        until: float | None = None,
        place: Place | None = None,
    ) -> tuple[list[Positioned], Cursor] | None:
        """Up to a page of ``kind``'s events from ``cursor`` on, each with its position
        within its revision, and the cursor after them.

        None when the page must come from the log and the reader's turn at it
        (``log_turns``, waited for at ``place``, which the stream keeps between
        reads and gives up with ``leave``) had not come when ``wanted()`` turned
        false or ``until`` (``time.monotonic()``) passed: the stream checks on its
        caller, maybe sends a bookmark, and reads again. Raises ``Conflict`` when
        the log no longer holds events of ``partitions`` (the orgs the reader
        follows; None: any) at the cursor.
        """
        with self._lock:
            if self._thread is not None and cursor.revision > self._floor:
                return self._from_cache(kind, cursor)
        turns = self.log_turns
        if turns is None:
            return self._from_log(kind, cursor, partitions)
        at = place or Place()
        if not turns.take(at, lambda: not self._closed and wanted(), until, self.settings.poll_seconds):
            if place is None:
                turns.leave(at)
            return None
        try:
            return self._from_log(kind, cursor, partitions)
        finally:
            turns.give(at)

    def leave(self, place: Place) -> None:
        """A stream that ends gives up its place in line for the log (and a turn called meanwhile)."""
        if self.log_turns is not None:
            self.log_turns.leave(place)

    def _from_cache(self, kind: str, cursor: Cursor) -> tuple[list[Positioned], Cursor]:
        cache = self._cache
        start = bisect.bisect_left(cache, (cursor.revision, cursor.index), key=lambda e: (e.revision, e.index))
        found: list[Positioned] = []
        budget = self.settings.page_bytes
        position = cursor
        for entry in itertools.islice(cache, start, None):
            if len(found) >= self.settings.page_events or budget <= 0:
                return found, max(position, cursor)
            position = Cursor(entry.revision, entry.index + 1)
            if entry.kind == kind:
                found.append((entry.event, entry.index))
                budget -= entry.size
        return found, max(cursor, Cursor.after(self._head))

    def _from_log(
        self, kind: str, cursor: Cursor, partitions: Collection[str] | None
    ) -> tuple[list[Positioned], Cursor]:
        settings = self.settings
        found: list[Positioned] = []
        budget = settings.page_bytes
        with self.store.read() as txn:
            seen = txn.revision
            compacted = txn.compacted_through(partitions)
            if cursor.revision <= seen and compacted >= cursor.revision:
                raise Compacted(cursor.complete, compacted + 1)
            previous, index = 0, 0
            position = cursor
            examined = 0
            for revision, payload in txn.events(cursor.revision - 1, partitions):
                index = index + 1 if revision == previous else 0
                previous = revision
                if revision == cursor.revision and index < cursor.index:
                    continue
                if len(found) >= settings.page_events or budget <= 0 or examined >= settings.page_events * 16:
                    return found, position
                examined += 1
                position = Cursor(revision, index + 1)
                event = ResourceEvent.FromString(payload)
                if event.kind == kind:
                    found.append((event, index))
                    budget -= len(payload)
        return found, max(cursor, Cursor.after(seen))
