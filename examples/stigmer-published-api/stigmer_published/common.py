"""Steps both published kinds need: what the published API expects beyond
what the framework does for every kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from stigmer_core import FieldViolation, InvalidArgument, Phase, RequestContext, Step, Unimplemented
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.step import FunctionStep

from stigmer_published import PLUGIN_NAME


def wire_kind(kind: str) -> Step:
    """The published resources carry their own kind name (``kind: "Agent"``,
    a const rule of the message), not the name this daemon registers them
    under, so a stored object is what the official client sent and expects."""

    def run(ctx: RequestContext) -> None:
        ctx.resource.kind = kind  # type: ignore[union-attr]

    return FunctionStep("published_kind_name", Phase.BUILD, run)


def _allowed(path: str, mutable: Sequence[str]) -> bool:
    return any(path == m or path.startswith(m + ".") for m in mutable)


def _validated(resource: Any, prefix: str = "resource.") -> None:
    """The update input's ``resource`` is exempt from field rules in the
    published schema (``IGNORE_ALWAYS``), so the state it produces is checked."""
    try:
        validation.check(resource)
    except InvalidArgument as exc:
        violations = [FieldViolation(f"{prefix}{v.field}", v.description) for v in exc.violations]
        raise InvalidArgument(exc.message, violations) from None


def checked_new_state() -> Step:
    """A created object meets the published rules as stored, not only as sent:
    the request was checked before the framework derived a slug from the
    name, and a one-letter name gives a slug the published pattern refuses
    (at least two characters)."""

    def run(ctx: RequestContext) -> None:
        _validated(ctx.resource, "")

    return FunctionStep("check_new_state", Phase.KIND, run)


def masked_update() -> Step:
    """Honour ``update_mask``: only the named paths change, and only the kind's
    declared ``mutable`` paths may be named. An empty mask keeps the
    framework's update (spec and mutable metadata from the request)."""

    def run(ctx: RequestContext) -> None:
        request: Any = ctx.request
        if type(request) is ctx.kind.resource_cls:  # apply: the resource was the request, validated whole
            return
        existing = ctx.existing
        assert existing is not None
        mutable = ctx.kind.decl.mutable
        paths = list(request.update_mask.paths)
        refused = [p for p in paths if not _allowed(p, mutable)]
        if refused:
            raise InvalidArgument(
                f"update_mask: {', '.join(refused)} cannot be updated (mutable: {', '.join(mutable)})",
                [FieldViolation("update_mask.paths", f"'{p}' is not mutable") for p in refused],
            )
        if paths:
            new = ctx.kind.resource_cls()
            new.CopyFrom(existing)
            request.update_mask.MergeMessage(
                request.resource, new, replace_message_field=True, replace_repeated_field=True
            )
            ctx.unchanged = new == existing
            if not ctx.unchanged:
                ctx.store.stamp_update(ctx.kind, new, principal=ctx.principal)
            ctx.resource = new
        _validated(ctx.resource)

    return FunctionStep("apply_update_mask", Phase.BUILD, run)


def unimplemented(service: ServiceDescriptor, method: str, reason: str) -> Step:
    """A pipeline for a method this daemon does not serve: UNIMPLEMENTED, naming it."""
    full = f"{service.full_name}.{method}"
    message = f"{full} is not served by the {PLUGIN_NAME} plugin: {reason}"

    def run(ctx: RequestContext) -> None:
        raise Unimplemented(message)

    return FunctionStep(f"unimplemented_{method}", Phase.VALIDATE, run)
