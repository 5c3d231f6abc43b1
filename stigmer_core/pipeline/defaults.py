"""The default pipeline of each standard operation (DESIGN.md, Operations)."""

from __future__ import annotations

from stigmer_core.pipeline import steps as s
from stigmer_core.pipeline import watch as w
from stigmer_core.pipeline.step import Step

DEFAULT_PIPELINES: dict[str, tuple[Step, ...]] = {
    "create": (
        s.validate, s.authorize, s.resolve_slug, s.check_duplicate, s.build_new_state,
        s.persist_new, s.publish, s.redact, s.respond,
    ),
    # apply runs create's or update's transactional steps; see dispatch_apply.
    "apply": (s.validate, s.authorize, s.dispatch_apply),
    "update": (
        s.validate, s.authorize, s.load_existing, s.check_version, s.build_update_state,
        s.persist_update, s.publish, s.redact, s.respond,
    ),
    "delete": (s.validate, s.authorize, s.load_by_id, s.delete, s.publish, s.redact, s.respond),
    "get": (s.validate, s.authorize, s.load_by_id, s.redact, s.respond),
    "getByReference": (s.validate, s.authorize, s.load_by_reference, s.redact, s.respond),
    "list": (s.validate, s.authorize, s.list_page, s.respond),
}  # fmt: skip

WATCH_PIPELINE: tuple[Step, ...] = (s.validate, w.watch_scope, s.authorize, w.watch_events)
"""Every kind's ``watch`` (the generic Watch service): a read pipeline whose response is a stream."""
