"""What a delete takes with it, and the way out when it is refused.

The server deletes an object together with everything it owns
(``metadata.ownerReferences``), transitively, and names every object that
went in the call's trailing metadata (``stigmer-removed``): what the CLI
prints is what happened, not a guess. ``delete --dry-run`` asks the server to
rehearse the delete (``stigmer-dry-run``): the same pipeline, rolled back.

A delete refused because another object still refers to the target
(FAILED_PRECONDITION ``... is still referenced by <kind> '<slug>' (<field>)``)
gets the commands that clear the way: ``stigmer cancel`` when the referrer's
kind has a ``cancel`` rpc (a running execution), and ``stigmer delete`` of the
referrer. Not when the referrer is a default instance (the refusal's
``defaultInstanceOf``): it goes only with its owner, so the server's message,
which names the edit that frees the target, stands alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


def report(
    session: Session,
    kind: KindInfo,
    target: Any,
    removed: Sequence[tuple[str, str, str]],
    counts: Mapping[str, int],
    *,
    dry_run: bool,
) -> list[str]:
    """The lines a delete prints: the object named, then what the server removed with it (by
    name as far as the server named them, then how many more of each kind)."""
    suffix = " (dry run)" if dry_run else ""
    verb = "would be deleted" if dry_run else "deleted"
    target_id = metadata(target).id
    lines = [f"{ref(kind, target)} {verb}{suffix}"]
    more = dict(counts)
    for kind_name, object_id, slug in removed:
        more[kind_name] = more.get(kind_name, 0) - 1
        if object_id == target_id:
            continue
        lines.append(f"{_cli_name(session, kind_name)}/{slug} {verb} with it{suffix}")
    for kind_name, count in more.items():
        if count > 0:
            lines.append(f"{count} more {_cli_name(session, kind_name, count)} {verb} with it{suffix}")
    return lines


def _cli_name(session: Session, kind_name: str, count: int = 1) -> str:
    found = session.catalog.find(kind_name)
    if found is None:
        return kind_name.lower() if count == 1 else f"{kind_name.lower()}s"
    return found.cli_name if count == 1 else found.plural.lower()


def way_out(session: Session, error: errors.FailedPrecondition) -> CliError | None:
    """The refusal with the commands that clear it, when the server named the referrer."""
    match = _REFERRER.search(error.message)
    if match is None or error.metadata.get("defaultInstanceOf") or error.metadata.get("deletedWith"):
        return None  # the way out is an edit the message names, not a delete of the referrer
    referrer = next((k for k in session.catalog.kinds if k.label == match["label"]), None)
    if referrer is None:
        return None
    slug = match["slug"]
    steps = []
    if "cancel" in referrer.methods:
        steps.append(f"`stigmer cancel {referrer.cli_name} {slug}` ends it")
    steps.append(f"`stigmer delete {referrer.cli_name} {slug}` removes it")
    return CliError(f"{error.message}: {', or '.join(steps)}")
