"""What a delete takes with it, and the way out when it is refused.

The server deletes an object together with everything it owns
(``metadata.ownerReferences``), transitively, and answers with the deleted
object only. So the CLI works the tree out itself before deleting, from the
objects of the same org, and after the delete checks which of them are gone:
what it prints is what happened, not a guess. ``delete --dry-run`` prints the
tree and stops.

A delete refused because another object still refers to the target
(FAILED_PRECONDITION ``... is still referenced by <kind> '<slug>' (<field>)``)
gets the commands that clear the way: ``stigmer cancel`` when the referrer's
kind has a ``cancel`` rpc (a running execution), and ``stigmer delete`` of the
referrer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from stigmer_core import errors
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.session import Session

_REFERRER = re.compile(r"is still referenced by (?P<label>[a-z ]+) '(?P<slug>[^']*)'")


def ref(kind: KindInfo, obj: Any) -> str:
    """``agent/support-bot``: how output lines name an object."""
    return f"{kind.cli_name}/{metadata(obj).slug}"


def owned(session: Session, kind: KindInfo, obj: Any, *, org: str) -> list[tuple[KindInfo, Any]]:
    """Everything ``obj`` owns, transitively, owners before what they own.

    Kinds that cannot be listed here are skipped: the delete itself still
    removes what they hold, it is only not named.
    """
    children: dict[str, list[tuple[KindInfo, Any]]] = {}
    for other in session.catalog.kinds:
        try:
            objects = list(session.calls(other).iterate(org=org))
        except (errors.StigmerError, CliError):
            continue
        for candidate in objects:
            for owner in getattr(metadata(candidate), "owner_references", ()):
                children.setdefault(owner.id, []).append((other, candidate))
    found: list[tuple[KindInfo, Any]] = []
    seen = {metadata(obj).id}
    pending = [metadata(obj).id]
    while pending:
        for child_kind, child in children.get(pending.pop(0), ()):
            child_id = metadata(child).id
            if child_id not in seen:
                seen.add(child_id)
                found.append((child_kind, child))
                pending.append(child_id)
    return found


def still_there(session: Session, objects: Sequence[tuple[KindInfo, Any]], *, org: str) -> set[str]:
    """Ids of ``objects`` that a lookup still finds."""
    return {metadata(obj).id for kind, obj in objects if session.calls(kind).lookup(org, metadata(obj).id) is not None}


def way_out(session: Session, error: errors.FailedPrecondition) -> CliError | None:
    """The refusal with the commands that clear it, when the server named the referrer."""
    match = _REFERRER.search(error.message)
    if match is None:
        return None
    referrer = next((k for k in session.catalog.kinds if k.label == match["label"]), None)
    if referrer is None:
        return None
    slug = match["slug"]
    steps = []
    if "cancel" in referrer.methods:
        steps.append(f"`stigmer cancel {referrer.cli_name} {slug}` ends it")
    steps.append(f"`stigmer delete {referrer.cli_name} {slug}` removes it")
    return CliError(f"{error.message}: {', or '.join(steps)}")
