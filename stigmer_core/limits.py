"""The limits every request is held to, as one value set at startup.

Each limit keeps something the server must always be able to do: answer
what it stored (object size and nesting below what gRPC and protobuf
accept), page through it (page bytes), and commit what it accepted (objects
one transaction may write). Going past one is refused before anything is
committed, with the status docs/design.md's limits table gives.

The defaults suit the 4 MiB gRPC message limit the server runs with; each
can be set by an environment variable read when the registry is built, or
by giving ``Limits(...)`` to ``Application.open``/``build_registry``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from stigmer_core.errors import StartupError
from stigmer_core.store.keys import MAX_EVENT_SEQ

MESSAGE_BYTES = 4 << 20
"""gRPC's message limit, both directions (stigmer_core.server)."""
MAX_EVENTS_PER_TRANSACTION = MAX_EVENT_SEQ
"""The event log numbers one transaction's events in two bytes (store/keys.py)."""

MAX_REPORT_ID_WINDOW = 1024
"""``status.recent_report_ids``'s own ``max_items`` (the execution protos): a larger window would
store a status its own rules refuse."""

PAGE_ROOM = 2048
"""What a page needs besides its objects (entry tags and lengths, the next page token)."""

ENV = {
    "max_object_bytes": "STIGMER_MAX_OBJECT_BYTES",
    "max_page_bytes": "STIGMER_MAX_PAGE_BYTES",
    "max_nesting_depth": "STIGMER_MAX_NESTING_DEPTH",
    "max_objects_per_write": "STIGMER_MAX_OBJECTS_PER_WRITE",
    "max_request_items": "STIGMER_MAX_REQUEST_ITEMS",
    "run_lease_seconds": "STIGMER_RUN_LEASE_SECONDS",
    "report_id_window": "STIGMER_REPORT_ID_WINDOW",
    "max_list_skipped": "STIGMER_MAX_LIST_SKIPPED",
    "max_org_bytes": "STIGMER_MAX_ORG_BYTES",
    "max_org_objects": "STIGMER_MAX_ORG_OBJECTS",
    "max_versions_per_object": "STIGMER_MAX_VERSIONS_PER_OBJECT",
}

UNBOUNDED_BY_ZERO = frozenset({"max_org_bytes", "max_org_objects"})
"""Limits for which 0 means "no limit" (a server with one org, or quotas kept elsewhere)."""


def _named(name: str) -> str:
    """A limit as its messages name it: the attribute and the variable that sets it."""
    return f"{name} ({ENV[name]})"


@attrs.frozen
class Limits:
    max_object_bytes: int = 2 << 20
    """Serialized size of one stored object. Half the message limit: room for
    what a response adds around an object, and below a list page, so every
    object can be answered and listed. Objects derived from others (an
    execution context holds the values of several environments) are held to
    it too, so the write that would derive a larger one is refused."""
    max_page_bytes: int = 3 << 20
    """Bytes of objects one list page carries; a page stops before the object
    that would pass it (one object always fits: max_object_bytes is smaller)."""
    max_nesting_depth: int = 64
    """Message nesting of a stored object, the resource being level 1 and every
    nested message (a map entry, a Struct, a Value) one more. protobuf refuses
    to parse past 100, and a list page or a client's wrapper adds levels."""
    max_objects_per_write: int = 10_000
    """Objects one write may create, change or delete, a cascading delete's
    owned objects included; each is one event of the transaction."""
    max_request_items: int = 100_000
    """Items one request may carry: elements of repeated fields and entries of
    maps, at every level, a ``Struct``'s contents included. Validating costs
    about 2 µs an item with the GIL held, so this bounds one request's stall of
    the daemon near what parsing a 4 MiB request costs anyway (stigmer_core.request_items)."""
    run_lease_seconds: int = 300
    """How long a runner may go without a report naming it (every such report is a heartbeat)
    before another runner may take its run over with a claim: a runner that died leaves no run
    IN_PROGRESS for good."""
    report_id_window: int = 32
    """How many ids of a run's latest applied reports it keeps (``status.recent_report_ids``): a
    report sent again with one of them (its answer was lost) is not applied twice, even when
    heartbeats or other reports came in between. A runner retries one report at a time, so a
    few suffice; 32 leaves room for a runner with several reports in flight. At most
    ``MAX_REPORT_ID_WINDOW``, the field's own rule."""
    max_list_skipped: int = 1_000
    """Objects one list page may read and leave out (those its other conditions reject, when a
    list names more than one label or filter and an index answers only one). Past it the page
    ends, perhaps empty, with a ``next_page_token`` after the last object read: a list whose
    conditions match little of a large org costs each call a bounded read, not the org's size,
    which on a shared daemon would stall every org's calls."""
    max_org_bytes: int = 4 << 30
    """Bytes of stored objects one org may hold (each object's serialized value, and for a
    versioned kind the values kept under its ``ver/`` range: versions, tags, blobs). On a team
    server every org writes to one store, so without it one org (or a leaked editor token)
    could fill the disk and leave every org's writes refused. 4 GiB is two thousand objects
    of the largest size, or millions of ordinary ones (an agent is about 1 KB), and leaves a
    disk of a few hundred GiB room for dozens of orgs at their limit. Bound only callers with
    API tokens: the local administrator owns the machine (kinds/usage.py). 0: no limit."""
    max_org_objects: int = 1_000_000
    """Objects one org may hold, every kind together. Each object costs index, ownership and
    event entries besides its bytes, so many small objects fill a store as surely as a few
    large ones. A million is far more than an org's agents, workflows and skills, and a long
    history of sessions and executions (a run is two or three objects), which the org can
    delete when it nears the limit; at a typical 1-2 KB an object it is also about where the
    byte limit binds. 0: no limit."""
    max_versions_per_object: int = 10_000
    """Versions one object of a versioned kind keeps (a skill's contents). Its delete, a
    cascade's included, clears every one in its write, as many keys as a cascade of that
    many objects; without a bound, one editor pushing small changes in a loop made an object
    whose delete held every org's writes on a team server for minutes. Ten thousand is a
    version a working day for decades; past it a write that would make another is refused,
    and one that returns to a content the object already had still goes through."""

    def __attrs_post_init__(self) -> None:
        for name in ENV:
            if name in UNBOUNDED_BY_ZERO:
                if getattr(self, name) < 0:
                    raise StartupError(f"limit {_named(name)} must be 0 (no limit) or more, not {getattr(self, name)}")
            elif getattr(self, name) < 1:
                raise StartupError(f"limit {_named(name)} must be positive, not {getattr(self, name)}")
        if self.max_page_bytes > MESSAGE_BYTES - (256 << 10):
            raise StartupError(
                f"{_named('max_page_bytes')} {self.max_page_bytes} leaves no room under the "
                f"{MESSAGE_BYTES}-byte message limit (at most {MESSAGE_BYTES - (256 << 10)})"
            )
        if self.max_object_bytes > self.max_page_bytes - PAGE_ROOM:
            raise StartupError(
                f"{_named('max_object_bytes')} {self.max_object_bytes} leaves less than {PAGE_ROOM} bytes of "
                f"{_named('max_page_bytes')} {self.max_page_bytes} for a page's own fields: such an object could "
                f"never be listed (lower the first, or raise the second; at least {PAGE_ROOM} bytes apart)"
            )
        if not 8 <= self.max_nesting_depth <= 90:
            raise StartupError(f"{_named('max_nesting_depth')} must be between 8 and 90, not {self.max_nesting_depth}")
        if self.report_id_window > MAX_REPORT_ID_WINDOW:
            raise StartupError(
                f"{_named('report_id_window')} must be between 1 and {MAX_REPORT_ID_WINDOW}, not {self.report_id_window}"
            )
        if self.max_objects_per_write >= MAX_EVENTS_PER_TRANSACTION:
            raise StartupError(f"{_named('max_objects_per_write')} must be below {MAX_EVENTS_PER_TRANSACTION}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with any of the ``ENV`` variables that is set."""
        environ = os.environ if environ is None else environ
        given: dict[str, int] = {}
        for name, variable in ENV.items():
            raw = environ.get(variable)
            if raw:
                try:
                    given[name] = int(raw)
                except ValueError:
                    raise StartupError(f"{variable}={raw!r} is not a whole number") from None
        return cls(**given)
