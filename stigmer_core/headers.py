"""gRPC metadata the server reads and writes beyond the messages: part of the wire contract,
so clients in any language can use it (docs/design.md lists it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from stigmer_core import errors

DRY_RUN = "stigmer-dry-run"
"""Request metadata: a write with ``stigmer-dry-run: true`` runs its whole pipeline in its
transaction, answers what it would have answered, and is rolled back (like Kubernetes'
server-side dry run): nothing is stored, no event is published."""

REMOVED = "stigmer-removed"
"""Trailing metadata of a write that deleted objects (a delete and its cascade): one entry per
object, ``<Kind> <id> <slug>``, owners before what they owned, for the first ``REMOVED_LISTED``."""

REMOVED_COUNT = "stigmer-removed-count"
"""Trailing metadata beside ``REMOVED``: one entry, how many objects of each kind the write
deleted, ``<Kind>=<n>`` separated by spaces (every object, listed or not)."""

DRY_RUN_CREATED = "stigmer-dry-run-created"
"""Trailing metadata of a dry run that would have created objects besides its own (an agent's
default instance): one entry per object, ``<Kind> <id> <slug> <org>``, for the first
``REMOVED_LISTED``: a client dry-running several documents takes them as made, as the real
writes would have made them (a session naming the default instance by slug)."""

CREATED_MARK = "+"
"""How an entry of a write's trailers list names an object it created, not one it removed."""

REMOVED_LISTED = 50
"""Objects named one by one in ``REMOVED`` at most. A cascade may delete thousands, and clients
cap metadata (grpc's C core at 8-16 KiB, Node's HTTP/2 at 128 entries): past the cap a committed
delete would reach its client as a failed call."""
REMOVED_LISTED_BYTES = 4096
"""Bytes of ``REMOVED`` entries at most (long slugs), within the same cap."""

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def dry_run(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether the request asks for a dry run. A value that is neither yes nor no is refused: read
    as no, a client's ``True`` (Python's spelling) would write for real what it meant to rehearse."""
    asked = False
    for key, value in metadata or ():
        if key != DRY_RUN:
            continue
        spelled = (value.decode() if isinstance(value, bytes) else value).strip().lower()
        if spelled in _TRUE:
            asked = True
        elif spelled not in _FALSE:
            why = f"{value!r} is not true or false"  # the header named as a field: clients read violations
            raise errors.InvalidArgument(f"metadata {DRY_RUN}: {why}", [errors.FieldViolation(DRY_RUN, why)])
    return asked


def removed_trailers(removed: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The trailing metadata naming what a write deleted (and, for a dry run, what else it would
    have created: entries marked ``CREATED_MARK``), within what every client can receive."""
    created = [entry[len(CREATED_MARK) :] for entry in removed if entry.startswith(CREATED_MARK)]
    gone = [entry for entry in removed if not entry.startswith(CREATED_MARK)]
    listed: list[tuple[str, str]] = []
    size = 0
    for header, entries in ((REMOVED, gone), (DRY_RUN_CREATED, created)):
        for entry in entries[:REMOVED_LISTED]:
            size += len(entry) + len(header)
            if size > REMOVED_LISTED_BYTES:
                break
            listed.append((header, entry))
    if gone:
        counts = Counter(entry.split(" ", 1)[0] for entry in gone)
        listed.append((REMOVED_COUNT, " ".join(f"{kind}={n}" for kind, n in counts.items())))
    return tuple(listed)
