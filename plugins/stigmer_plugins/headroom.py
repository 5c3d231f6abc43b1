"""Room an execution keeps under ``max_object_bytes`` for its own lifecycle.

Ending a run (its claim, a heartbeat, COMPLETED or FAILED with an error, an
editor's cancel) writes only fields the lifecycle owns: the runner's name,
the phase, times, the status audit, the ids of recent reports, the error.
Refused for size, such a write would leave the run PENDING or IN_PROGRESS
for good: never finished, never cancelled, never taken over (its heartbeats
pass), its agent never deletable and its context's secrets never erased.

So every write that adds content to an execution (its create, an editor's
update, a report carrying messages, tasks or output) must leave it within
``max_object_bytes`` less the headroom: the most those lifecycle fields can
take under their own field rules (and what ending a workflow run adds to
the tasks it closes). A write of lifecycle fields alone may use that
headroom, and by construction never passes ``max_object_bytes``, which every
stored object still keeps, so readers (a list page, a response) are as
before.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from stigmer_core import Phase, RequestContext, ResourceExhausted, step
from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kinds.nesting import is_repeated
from stigmer_core.limits import ENV

LIFECYCLE_FIELDS = frozenset(
    {
        "phase",
        "runner",
        "started_at",
        "completed_at",
        "heartbeat_at",
        "report_id",
        "recent_report_ids",
        "error",
        "audit",
    }
)
"""Status fields the lifecycle writes (``error``: a FAILED report's or a cancel's reason). A report
setting nothing else, with an error message of at most ``ERROR_KEPT_CHARS``, carries no content
and may use the headroom."""

ERROR_KEPT_CHARS = 4096
"""The longest error message the headroom keeps room for: a cancel's reason (its field's rule).
Kept for the message's own rule (65,536 characters, 256 KiB of UTF-8), the headroom would take
more than a daemon with a small ``max_object_bytes`` has, and no run could be created there; a
FAILED report with a longer message is content, so a full run ends with a shorter one."""

_WIDEST = "\U0010ffff"
"""Four bytes of UTF-8: a string rule counts characters, so its field takes up to four bytes each."""

_LATEST = Timestamp(seconds=253_402_300_799, nanos=999_999_999)
"""9999-12-31T23:59:59.999999999Z, the latest time a stored object may hold: its widest encoding."""

_PREFIX_GROWTH = 4
"""How much a length prefix can grow (a varint of a length below 4 GiB takes 1 to 5 bytes)."""


def _rules(field: Any) -> Any:
    extension: Any = validate_pb2.field
    return field.GetOptions().Extensions[extension]


def _max_len(rules: Any) -> int:
    return int(rules.string.max_len) if rules.string.HasField("max_len") else 0


def _metadata_max_len(name: str) -> int:
    return _max_len(_rules(metadata_pb2.ApiResourceMetadata.DESCRIPTOR.fields_by_name[name]))


PRINCIPAL_BYTES = len("token:/") + _metadata_max_len("org") + _metadata_max_len("slug")
"""The longest principal an audit records: an API token's ``token:ORG/NAME`` (org and slug are
ASCII under their patterns), longer than the local administrator's ``local``."""


def _fill(message: Message, field: Any, window: int) -> None:
    """Fill ``field`` of ``message`` to the most its rules allow; of the strings without a rule (an
    audit's), the server sets only an actor's ``id``, to a principal."""
    rules = _rules(field)
    if is_repeated(field):
        if field.type == FieldDescriptor.TYPE_STRING:  # recent_report_ids: the window, at most the field's rule
            items = min(window, int(rules.repeated.max_items) or window)
            getattr(message, field.name).extend([_WIDEST * _max_len(rules.repeated.items)] * items)
    elif field.message_type is not None:
        _widest(getattr(message, field.name), window)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        setattr(message, field.name, max(v.number for v in field.enum_type.values))
    elif field.type == FieldDescriptor.TYPE_STRING:
        longest = _max_len(rules)
        if longest:
            setattr(message, field.name, _WIDEST * longest)
        elif field.name == "id":
            setattr(message, field.name, "p" * PRINCIPAL_BYTES)


def _widest(message: Message, window: int) -> None:
    if isinstance(message, Timestamp):
        message.CopyFrom(_LATEST)
        return
    for field in message.DESCRIPTOR.fields:
        _fill(message, field, window)


def _closing_bytes(status: Any) -> int:
    """What ending a run may add to the tasks it closes (a workflow execution's end moves every
    open task to CANCELLED and stamps its ``completed_at``), for as many tasks as the field's rule
    holds: the phase's field, the time's, and the growth of the task's length prefix."""
    total = 0
    for field in status.fields:
        item = field.message_type
        if not is_repeated(field) or item is None:
            continue
        if "phase" in item.fields_by_name and "completed_at" in item.fields_by_name:
            per_task = 2 + (2 + _LATEST.ByteSize()) + _PREFIX_GROWTH
            total += per_task * int(_rules(field).repeated.max_items)
    return total


@cache
def _headroom(status_cls: Any, window: int) -> int:
    status = status_cls.DESCRIPTOR
    widest = status_cls()
    for name in sorted(LIFECYCLE_FIELDS.intersection(status.fields_by_name)):
        _fill(widest, status.fields_by_name[name], window)
    if "error" in status.fields_by_name:
        widest.error.message = _WIDEST * ERROR_KEPT_CHARS
    stamped = metadata_pb2.ApiResourceMetadata(resource_version=(1 << 63) - 1, updated_at=_LATEST)
    # the status's and the metadata's own length prefixes may grow with what they hold
    return int(widest.ByteSize()) + stamped.ByteSize() + _closing_bytes(status) + 2 * _PREFIX_GROWTH


def headroom(ctx: RequestContext) -> int:
    """Bytes of ``max_object_bytes`` the execution kind ``ctx.kind`` keeps for its lifecycle."""
    status_cls: Any = type(ctx.kind.resource_cls().status)  # type: ignore[attr-defined]
    return _headroom(status_cls, ctx.registry.limits.report_id_window)


def content_limit(ctx: RequestContext) -> int:
    """What an execution may take after a write that adds content (said in its refusals)."""
    return ctx.registry.limits.max_object_bytes - headroom(ctx)


def carries_content(report: Message) -> bool:
    """Whether a runner's report sets anything besides the lifecycle's own fields."""
    if any(field.name not in LIFECYCLE_FIELDS for field, _ in report.ListFields()):
        return True
    error: Any = getattr(report, "error", None)
    return error is not None and len(error.message) > ERROR_KEPT_CHARS


def check_content(ctx: RequestContext, old: Message | None, new: Message, *, write: str, advice: str) -> None:
    """Refuse a write that adds content past the content limit (``max_object_bytes`` less the
    headroom). A write that does not grow the execution is let through, so an execution stored
    before the headroom was kept can still be edited down, and a content-free move never comes here."""
    size, limit = new.ByteSize(), content_limit(ctx)
    if size <= limit or (old is not None and size <= old.ByteSize()):
        return
    limits, meta = ctx.registry.limits, new.metadata  # type: ignore[attr-defined]
    reserved = limits.max_object_bytes - limit
    if limit <= 0:  # a daemon set below the headroom can hold no execution at all: say what to change
        advice = f"raise max_object_bytes (STIGMER_MAX_OBJECT_BYTES) above {reserved}"
    raise ResourceExhausted(
        f"{ctx.kind.label} '{meta.slug or meta.id}' would take {size} bytes with this {write}, more than the "
        f"{max(limit, 0)} an execution's content may take: max_object_bytes ({limits.max_object_bytes}) less "
        f"{reserved} bytes kept so that its run can always be claimed, ended and cancelled (its runner, "
        f"phase, times, audit, error and last {limits.report_id_window} report ids); {advice}",
        reason="OBJECT_TOO_LARGE",
        metadata={
            "kind": ctx.kind.name,
            **({"id": meta.id} if meta.id else {}),
            "limit": max(limit, 0),
            "setting": ENV["max_object_bytes"],
            "maxObjectBytes": limits.max_object_bytes,
            "headroom": reserved,
        },
    )


@step(Phase.KIND)
def fits_content(ctx: RequestContext) -> None:
    """For an execution kind's ``create`` and ``update`` steps, after its others: what an editor
    writes is content, held to the content limit."""
    assert ctx.resource is not None
    check_content(
        ctx,
        ctx.existing,
        ctx.resource,
        write="create" if ctx.existing is None else "update",
        advice="send less (a shorter message or input, fewer or shorter runtime values, labels or annotations)",
    )
