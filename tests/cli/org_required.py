"""A plugin that makes the note kind's ``list`` refuse to run without an org.

Some kinds (the published API's, for one) insist on an org in every list
request; commands over all kinds and every org must cope with them. Tests put
this module on the path and register it beside ``note_kind``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stigmer_core import InvalidArgument, KindDeclaration, Phase, RequestContext, Step, hookimpl, step


@step(Phase.VALIDATE)
def require_org(ctx: RequestContext) -> None:
    request: Any = ctx.request
    if not request.org:
        raise InvalidArgument.field("org", "must be at least 1 characters")


@hookimpl
def stigmer_pipeline_steps(kind: KindDeclaration, operation: str) -> Sequence[Step]:
    return [require_org] if kind.name == "Note" and operation == "list" else []
