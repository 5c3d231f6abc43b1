"""Stigmer's published Agent (``ai.stigmer.agentic.agent.v1``) as the kind ``StigmerAgent``.

The first-party Agent kind owns the name "Agent" and the key prefix
"agents"; this one lives beside it under its own names and prefixes, while
its objects keep the published ``kind: "Agent"``. A reference naming
``ApiResourceKind.agent`` (what the SDK sends) resolves here because the
resource message is called ``Agent``.
"""

from __future__ import annotations

from typing import Any

from ai.stigmer.agentic.agent.v1 import api_pb2, command_pb2, query_pb2
from stigmer_core import CustomOperation, KindDeclaration, Phase, RequestContext, step
from stigmer_core.pipeline import steps as standard

from stigmer_published.common import checked_new_state, masked_update, unimplemented, wire_kind

COMMANDS = command_pb2.DESCRIPTOR.services_by_name["AgentCommandController"]
QUERIES = query_pb2.DESCRIPTOR.services_by_name["AgentQueryController"]
API_VERSION = "agentic.stigmer.ai/v1"
MUTABLE = ("metadata.name", "metadata.labels", "metadata.tags", "spec")
NO_VERSIONS = "this daemon keeps no version history of agents"


@step(Phase.LOAD)
def load_by_resource_id(ctx: RequestContext) -> None:
    request: Any = ctx.request
    ctx.existing = ctx.store.require(ctx.kind, request.resource_id)


@step(Phase.PERSIST)
def set_visibility(ctx: RequestContext) -> None:
    """``updateVisibility``: the one metadata field the generic update keeps as stored."""
    request: Any = ctx.request
    existing = ctx.existing
    assert isinstance(existing, api_pb2.Agent)
    updated = api_pb2.Agent()
    updated.CopyFrom(existing)
    updated.metadata.visibility = request.visibility
    if updated != existing:
        ctx.store.stamp_update(ctx.kind, updated, principal=ctx.principal)
        ctx.store.replace(ctx.kind, existing, updated)
    ctx.resource = updated


AGENT = KindDeclaration(
    name="StigmerAgent",
    resource=api_pb2.Agent,
    command_service=COMMANDS,
    query_service=QUERIES,
    id_prefix="pagt",
    key_prefix="published-agents",
    steps={"create": (wire_kind("Agent"), checked_new_state()), "update": (masked_update(),)},
    operations={
        "updateVisibility": CustomOperation(
            steps=(
                standard.validate,
                standard.authorize,
                load_by_resource_id,
                set_visibility,
                standard.publish,
                standard.redact,
                standard.respond,
            ),
            writes=True,
        ),
        "rename": CustomOperation(steps=(unimplemented(COMMANDS, "rename", "slugs are immutable here"),)),
        "tagVersion": CustomOperation(steps=(unimplemented(COMMANDS, "tagVersion", NO_VERSIONS),)),
        "listVersions": CustomOperation(steps=(unimplemented(QUERIES, "listVersions", NO_VERSIONS),)),
        "getVersion": CustomOperation(steps=(unimplemented(QUERIES, "getVersion", NO_VERSIONS),)),
    },
    mutable=MUTABLE,
    api_version=API_VERSION,
    plural="stigmer-agents",
    description="Stigmer's published Agent, served for the official stigmer-sdk client.",
)
