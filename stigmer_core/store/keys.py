"""The key layout, shared by every engine.

::

    m/revision                                  global revision (8 bytes, big-endian)
    m/indexes/<key_prefix>                      the indexes a kind's entries were written for (JSON)
    m/kinds/<kind name, lower case>             the key and id prefixes a kind's objects were written with, and the
                                                plugin release (or declaration fingerprint) that last reconciled it
                                                (JSON; every write of the kind reads it: kinds/releases.py)
    o/<key_prefix>/<id>                         object: serialized protobuf
    s/<key_prefix>/<org>/<slug>                 slug index -> id
    x/<key_prefix>/<index>/<value>\\0<id>        declared secondary index -> b""
    r/<owner_id>/<key_prefix>/<id>              ownership -> b""
    q/<target_id>/<key_prefix>/<id>             reference -> referring field name
    e/<revision:8><seq:2>                       event log entry
    m/event-time/<revision:8>                   commit time of a revision's events (ns, 8 bytes), for retention
                                                by age, then the revision's partition
    m/event-bytes                               total bytes of the retained event log (8 bytes)
    m/event-revisions                           revisions the retained event log holds (8 bytes)
    m/event-part/<partition>                    one partition's (org's) share of the log: revisions held,
                                                bytes held, newest revision pruned (3 x 8 bytes)
    m/event-by-part/<partition>\\0<revision:8>   the revisions a partition holds -> b"", oldest first
    m/event-compacted                           newest revision pruned from any partition (8 bytes)
    ver/<key_prefix>/<id>/...                   versions of a versioned kind's object (stigmer_core.versioning)
    m/org-usage/<org>                           what one org's objects take: objects, bytes (2 x 8 bytes),
                                                kept with every write (stigmer_core.kinds.usage)
    m/org-usage-counted                         marker: the org-usage counters were computed for this store

Index values are joined with NUL, which no validated org, slug, label or id
may contain, so a prefix scan of one value never runs into another.
"""

from __future__ import annotations

from stigmer_core.errors import InvalidArgument, ResourceExhausted

REVISION = b"m/revision"
EVENTS = b"e/"
EVENT_TIMES = b"m/event-time/"
EVENT_BYTES = b"m/event-bytes"
EVENT_REVISIONS = b"m/event-revisions"
EVENT_PARTS = b"m/event-part/"
EVENT_PART_REVISIONS = b"m/event-by-part/"
EVENT_COMPACTED = b"m/event-compacted"
ORG_USAGE = b"m/org-usage/"
ORG_USAGE_COUNTED = b"m/org-usage-counted"
SEP = b"\x00"

MAX_KEY_BYTES = 511
"""The longest key a store holds: LMDB's bound (its default ``MDB_MAXKEYSIZE``). PostgreSQL takes
longer ones, but an index entry past it is refused on both engines, so that what one engine
stores another can take (a store moved by export and import)."""


def object_prefix(key_prefix: str) -> bytes:
    return b"o/" + key_prefix.encode() + b"/"


def object_key(key_prefix: str, object_id: str) -> bytes:
    return b"o/" + key_prefix.encode() + b"/" + object_id.encode()


def slug_prefix(key_prefix: str, org: str) -> bytes:
    return b"s/" + key_prefix.encode() + b"/" + org.encode() + b"/"


def slug_key(key_prefix: str, org: str, slug: str) -> bytes:
    return slug_prefix(key_prefix, org) + slug.encode()


def slug_range(key_prefix: str) -> bytes:
    """Every slug index entry of one kind, all orgs."""
    return b"s/" + key_prefix.encode() + b"/"


def indexes_range(key_prefix: str) -> bytes:
    """Every declared and label index entry of one kind."""
    return b"x/" + key_prefix.encode() + b"/"


def index_range(key_prefix: str, index: str) -> bytes:
    """Every entry of one index."""
    return b"x/" + key_prefix.encode() + b"/" + index.encode() + b"/"


def index_record_key(key_prefix: str) -> bytes:
    return b"m/indexes/" + key_prefix.encode()


def kind_record_key(kind_name: str) -> bytes:
    return b"m/kinds/" + kind_name.lower().encode()


def index_prefix(key_prefix: str, index: str, value: tuple[str, ...]) -> bytes:
    return b"x/" + key_prefix.encode() + b"/" + index.encode() + b"/" + SEP.join(v.encode() for v in value) + SEP


def index_key(key_prefix: str, index: str, value: tuple[str, ...], object_id: str) -> bytes:
    return index_prefix(key_prefix, index, value) + object_id.encode()


def owned_prefix(owner_id: str) -> bytes:
    return b"r/" + owner_id.encode() + b"/"


def owned_key(owner_id: str, key_prefix: str, object_id: str) -> bytes:
    return owned_prefix(owner_id) + key_prefix.encode() + b"/" + object_id.encode()


def referrer_prefix(target_id: str) -> bytes:
    return b"q/" + target_id.encode() + b"/"


def referrer_key(target_id: str, key_prefix: str, object_id: str) -> bytes:
    return referrer_prefix(target_id) + key_prefix.encode() + b"/" + object_id.encode()


def version_prefix(key_prefix: str, object_id: str) -> bytes:
    return b"ver/" + key_prefix.encode() + b"/" + object_id.encode() + b"/"


def org_usage_key(org: str) -> bytes:
    return ORG_USAGE + org.encode()


MAX_EVENT_SEQ = 0xFFFF
"""One transaction's events are numbered in two bytes; ``Limits.max_objects_per_write``
keeps every write the API accepts well below this."""


def event_key(revision: int, seq: int) -> bytes:
    if seq > MAX_EVENT_SEQ:  # a write past the limits; refused, never an overflow mid-commit
        raise ResourceExhausted(f"one write may record at most {MAX_EVENT_SEQ + 1} events")
    return EVENTS + revision.to_bytes(8, "big") + seq.to_bytes(2, "big")


def event_time_key(revision: int) -> bytes:
    return EVENT_TIMES + revision.to_bytes(8, "big")


MAX_PARTITION = 255
"""Bytes of a partition name in UTF-8 (an org: the API holds them to 63 characters), within what
every engine's keys take."""


def check_partition(partition: str) -> None:
    """Refuse a partition name the layouts cannot keep apart (a NUL ends a name in
    ``m/event-by-part/``; PostgreSQL's text holds none) or past every engine's key room."""
    long = len(partition) > MAX_PARTITION // 4 and len(partition.encode()) > MAX_PARTITION
    if long or "\x00" in partition:
        raise InvalidArgument(f"an event's partition (an org) must be at most {MAX_PARTITION} bytes, without NUL")


def event_part_key(partition: bytes) -> bytes:
    return EVENT_PARTS + partition


def event_part_revisions(partition: bytes) -> bytes:
    """Every revision one partition holds, oldest first."""
    return EVENT_PART_REVISIONS + partition + SEP


def event_part_revision_key(partition: bytes, revision: int) -> bytes:
    return EVENT_PART_REVISIONS + partition + SEP + revision.to_bytes(8, "big")


def event_revision(key: bytes) -> int:
    return int.from_bytes(key[2:10], "big")


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint, for assembling messages from stored bytes."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
