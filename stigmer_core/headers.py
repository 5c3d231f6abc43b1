"""gRPC metadata the server reads and writes beyond the messages: part of the wire contract,
so clients in any language can use it (docs/design.md lists it)."""

from __future__ import annotations

DRY_RUN = "stigmer-dry-run"
"""Request metadata: a write with ``stigmer-dry-run: true`` runs its whole pipeline in its
transaction, answers what it would have answered, and is rolled back (like Kubernetes'
server-side dry run): nothing is stored, no event is published."""

REMOVED = "stigmer-removed"
"""Trailing metadata of a write that deleted objects (a delete and its cascade): one entry per
object, ``<Kind> <id> <slug>``, owners before what they owned."""
