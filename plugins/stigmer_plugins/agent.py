"""Agent and AgentInstance kinds.

Creating an Agent creates its default AgentInstance in the same transaction
and records the instance's id in the agent's status; the instance is owned
by the agent, so deleting the agent deletes it (and any other instance of
that agent). An instance's ``spec.agent_id`` is a declared reference, so
documents may name the agent by slug (``stigmer apply`` resolves it) and the
store checks it in the writing transaction; the instances an agent owns go
with it, so they never block its delete. The default instance takes the
agent's ``spec.environment_refs`` when it is made, and follows every later
change of them in the transaction that makes it (``follow_environment_refs``):
executions take their environments from the instance, so an environment
removed from the agent must stop reaching its runs. All of it is steps; the
controllers stay generic.

An MCP server's headers named in its ``secret_headers`` (API keys, bearer
tokens) are sealed with the data-directory key before the agent is stored,
bound to ``<agent id>/<server name>/<header>``, and every response, stream,
event and export carries the redaction marker in their place (the kind's
``redact``), exactly as an Environment's secret values: writing the marker
back, or the same clear value, keeps the stored secret; the marker for a
header with no stored secret leaves it unset and listed in
``status.unset_secret_headers``.
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.message import Message

from stigmer_core import (
    FailedPrecondition,
    InvalidArgument,
    KindDeclaration,
    NotFound,
    Phase,
    RequestContext,
    hookimpl,
    step,
)
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2 as agent_service
from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.api.agentic.agentinstance.v1 import service_pb2 as instance_service
from stigmer_core.ids import derived_id
from stigmer_core.kinds.declaration import Reference
from stigmer_core.kinds.runtime import Registry
from stigmer_core.store.protocol import WriteTxn
from stigmer_plugins.environment import ENVIRONMENT, ENVIRONMENT_REFS, keep_environment_refs_in_org
from stigmer_plugins.references import keep_refs_in_org
from stigmer_plugins.secrets import PREFIX, REDACTED, Reseal, declare_sealed, keeps_sealed, secrets

DEFAULT_INSTANCE = "default_instance_id"
MAX_ENVIRONMENT_REFS = 64
"""An instance's ``spec.environment_refs`` bound (its proto's ``max_items``)."""
SKILL = "Skill"


@step(Phase.KIND)
def keep_agent_refs_in_org(ctx: RequestContext) -> None:
    """An agent's environments and skills are of its own org (``references.keep_refs_in_org``).

    One step for both fields, so an agent that names no skill pays for
    nothing more than its environment references.
    """
    keep_refs_in_org(ctx, "environment_refs", ENVIRONMENT.name, "an environment")
    keep_refs_in_org(ctx, "skill_refs", SKILL, "a skill")


@step(Phase.KIND)
def reserve_default_instance(ctx: RequestContext) -> None:
    """Name the default instance in the agent's status before the agent is written (one event)."""
    agent = ctx.resource
    assert isinstance(agent, agent_pb2.Agent)
    instance_id = derived_id(ctx.registry.kind("AgentInstance").id_prefix, agent.metadata.id, "default")
    agent.status.default_instance_id = instance_id
    ctx.scratch[DEFAULT_INSTANCE] = instance_id


@step(Phase.PERSIST)
def create_default_instance(ctx: RequestContext) -> None:
    """Runs after the agent's own insert: the instance's reference to its agent is checked on insert."""
    agent = ctx.resource
    assert isinstance(agent, agent_pb2.Agent)
    kind = ctx.registry.kind("AgentInstance")
    meta = agent.metadata
    instance = agentinstance_pb2.AgentInstance()
    instance_meta = instance.metadata
    instance_meta.name = f"{meta.name} (default)"[:253]
    instance_meta.slug = f"{meta.slug[:55]}-default"
    instance_meta.id = ctx.scratch[DEFAULT_INSTANCE]
    instance_meta.owner_references.add(kind="Agent", id=meta.id)
    instance.spec.agent_id = meta.id
    instance.spec.description = f"Default instance of agent '{meta.slug}'"
    if agent.spec.environment_refs:
        instance.spec.environment_refs.extend(agent.spec.environment_refs)
    fallback = f"{meta.slug[:40]}-default-{meta.id[-8:]}"  # when an instance of that slug was made by hand
    ctx.store.create(kind, instance, org=ctx.org, principal=ctx.principal, fallback_slug=fallback)


def _ref_key(ref: Any, org: str) -> tuple[str, ...]:
    """What a reference names, as executions resolve it: by id, else by org + slug."""
    return ("id", ref.id) if ref.id else ("slug", ref.org or org, ref.slug)


@step(Phase.PERSIST)
def follow_environment_refs(ctx: RequestContext) -> None:
    """Carry an update's change of ``spec.environment_refs`` to the default instance, in its transaction.

    Executions take their environments from the instance, so an environment
    removed from the agent must stop reaching its runs (and stop holding the
    environment, whose delete its referrers refuse). The refs the update
    removed leave the instance, the ones it added join it at the end; refs
    set on the instance directly stay. An instance that still holds exactly
    the agent's previous refs takes the new ones as given, order included.
    """
    agent, existing = ctx.resource, ctx.existing
    assert isinstance(agent, agent_pb2.Agent) and isinstance(existing, agent_pb2.Agent)
    org = agent.metadata.org
    before = [_ref_key(ref, org) for ref in existing.spec.environment_refs]
    after = [_ref_key(ref, org) for ref in agent.spec.environment_refs]
    if before == after:
        return
    kind = ctx.registry.kind("AgentInstance")
    stored = ctx.store.get(kind, existing.status.default_instance_id or agent.status.default_instance_id)
    if not isinstance(stored, agentinstance_pb2.AgentInstance) or stored.spec.agent_id != agent.metadata.id:
        return  # written before agents kept theirs; nothing to follow
    held = [_ref_key(ref, org) for ref in stored.spec.environment_refs]
    if held == before:
        refs = list(agent.spec.environment_refs)
    else:
        had, have = set(before), set(held)
        removed = had - set(after)
        refs = [ref for ref in stored.spec.environment_refs if _ref_key(ref, org) not in removed]
        for ref in agent.spec.environment_refs:
            key = _ref_key(ref, org)
            if key not in have and key not in had:  # one the agent had and the instance dropped stays dropped
                refs.append(ref)
                have.add(key)
    if [_ref_key(ref, org) for ref in refs] == held:
        return
    if len(refs) > MAX_ENVIRONMENT_REFS:
        raise InvalidArgument.field(
            "spec.environment_refs",
            f"its default instance '{stored.metadata.slug}' would name {len(refs)} environments with the ones it "
            f"names itself, more than {MAX_ENVIRONMENT_REFS}",
        )
    instance = agentinstance_pb2.AgentInstance()
    instance.CopyFrom(stored)
    del instance.spec.environment_refs[:]
    instance.spec.environment_refs.extend(refs)
    ctx.store.stamp_update(kind, instance, principal=ctx.principal)
    ctx.store.replace(kind, stored, instance)


@step(Phase.CHECK)
def check_agent_exists(ctx: RequestContext) -> None:
    """An instance belongs to an agent of its own org; checked in the writing transaction."""
    instance = ctx.request
    assert isinstance(instance, agentinstance_pb2.AgentInstance)
    agent_id = instance.spec.agent_id
    ctx.store.check_id(ctx.registry.kind("Agent"), agent_id, "spec.agent_id")
    agent = ctx.store.get(ctx.registry.kind("Agent"), agent_id)
    if agent is None or agent.metadata.org != ctx.org:  # type: ignore[attr-defined]
        raise NotFound(f"agent '{agent_id}' not found in org '{ctx.org}' (spec.agent_id)")


@step(Phase.BUILD)
def own_by_agent(ctx: RequestContext) -> None:
    instance = ctx.resource
    assert isinstance(instance, agentinstance_pb2.AgentInstance)
    del instance.metadata.owner_references[:]
    instance.metadata.owner_references.add(kind="Agent", id=instance.spec.agent_id)


@step(Phase.CHECK)
def keep_agent_id(ctx: RequestContext) -> None:
    given = ctx.request
    existing = ctx.existing
    assert isinstance(given, agentinstance_pb2.AgentInstance) and isinstance(existing, agentinstance_pb2.AgentInstance)
    if given.spec.agent_id != existing.spec.agent_id:
        raise InvalidArgument.field("spec.agent_id", f"is immutable (stored: '{existing.spec.agent_id}')")


@step(Phase.KIND)
def refuse_default_instance_delete(ctx: RequestContext) -> None:
    instance = ctx.existing
    assert isinstance(instance, agentinstance_pb2.AgentInstance)
    agent = ctx.store.get(ctx.registry.kind("Agent"), instance.spec.agent_id)
    if agent is not None and agent.status.default_instance_id == instance.metadata.id:  # type: ignore[attr-defined]
        raise FailedPrecondition(
            f"agent instance '{instance.metadata.slug}' is the default instance of agent "
            f"'{agent.metadata.slug}'; delete the agent instead",  # type: ignore[attr-defined]
            reason="DEFAULT_INSTANCE",
            metadata={"kind": "AgentInstance", "id": instance.metadata.id, "agentId": instance.spec.agent_id},
        )


def header_context(agent_id: str, server: str, header: str) -> str:
    """What a sealed MCP header is bound to (the associated data of its seal)."""
    return f"{agent_id}/{server}/{header}"


def _stored_headers(existing: Message | None) -> dict[str, agent_pb2.AgentMcpServer]:
    if not isinstance(existing, agent_pb2.Agent):
        return {}
    return {server.name: server for server in reversed(existing.spec.mcp_servers)}


@step(Phase.KIND)
def seal_mcp_headers(ctx: RequestContext) -> None:
    """Seal secret headers; keep the stored ciphertext for the marker or an unchanged value."""
    agent = ctx.resource
    assert isinstance(agent, agent_pb2.Agent)
    if not agent.spec.mcp_servers and not agent.status.unset_secret_headers:
        return  # no header to seal, none listed unset: nothing below would change the agent
    stored = _stored_headers(ctx.existing)
    keyring = secrets(ctx.registry)
    unset = []
    for index, server in enumerate(agent.spec.mcp_servers):
        secret = set(server.secret_headers)
        before = stored.get(server.name)
        was_secret = set(before.secret_headers) if before is not None else set()
        # Where the server's headers go: a marker keeps a stored secret only for the destination
        # it was stored for, or an editor could point the server elsewhere and let a runner carry
        # a secret it was never shown to the editor's host (or command).
        moved = before is not None and _destination(server) != _destination(before)
        stray = sorted(secret - set(server.headers))
        if stray:
            raise InvalidArgument.field(
                f"spec.mcp_servers[{index}].secret_headers", f"names '{stray[0]}', which is not one of the headers"
            )
        for name, value in sorted(server.headers.items()):
            field = f'spec.mcp_servers[{index}].headers["{name}"]'
            kept = before.headers.get(name, "") if before is not None and name in was_secret else ""
            kept = kept if kept.startswith(PREFIX) else ""
            context = header_context(agent.metadata.id, server.name, name)
            if name not in secret:
                if value == REDACTED and name in was_secret:
                    raise InvalidArgument.field(
                        field, "is the redaction marker of a stored secret; send the clear value to store it unsealed"
                    )
            elif value == REDACTED:
                if kept and moved:
                    raise InvalidArgument.field(
                        field,
                        "is the redaction marker of a secret stored for the server's earlier url, command or "
                        "args; a stored secret is only kept where it was sent: send its value again to move it",
                    )
                server.headers[name] = kept  # nothing to keep: the secret stays unset
            elif kept and keeps_sealed(ctx.caller, agent.metadata.org, keyring.check(ctx.store.txn), kept, value, context):
                server.headers[name] = kept
            elif value:
                server.headers[name] = keyring.seal(cast(WriteTxn, ctx.store.txn), value, context)
            if name in secret and not server.headers[name]:
                unset.append(f"{server.name}/{name}")
    del agent.status.unset_secret_headers[:]
    agent.status.unset_secret_headers.extend(sorted(unset))


def _destination(server: agent_pb2.AgentMcpServer) -> tuple[str, str, tuple[str, ...]]:
    return server.url, server.command, tuple(server.args)


def redact_mcp_headers(obj: Message) -> None:
    """Every secret header value becomes the redaction marker."""
    assert isinstance(obj, agent_pb2.Agent)
    for server in obj.spec.mcp_servers:
        for name in server.secret_headers:
            if name in server.headers:
                server.headers[name] = REDACTED


def has_secret_headers(obj: Message) -> bool:
    """Whether ``redact_mcp_headers`` would blank anything (an agent without MCP secrets is sent as it is)."""
    assert isinstance(obj, agent_pb2.Agent)
    servers = obj.spec.mcp_servers
    if not servers:  # most agents: asked of every one a get, list page, write or event shows
        return False
    return any(name in server.headers for server in servers for name in server.secret_headers)


def reseal_mcp_headers(obj: Message, reseal: Reseal) -> bool:
    """Key rotation's walk over the sealed headers (``secrets.declare_sealed``)."""
    assert isinstance(obj, agent_pb2.Agent)
    changed = False
    for server in obj.spec.mcp_servers:
        for name in server.secret_headers:
            value = server.headers.get(name, "")
            if value.startswith(PREFIX):
                server.headers[name] = reseal(value, header_context(obj.metadata.id, server.name, name))
                changed = True
    return changed


AGENT = KindDeclaration(
    name="Agent",
    resource=agent_pb2.Agent,
    command_service=agent_service.DESCRIPTOR.services_by_name["AgentCommandController"],
    query_service=agent_service.DESCRIPTOR.services_by_name["AgentQueryController"],
    id_prefix="agt",
    key_prefix="agents",
    steps={
        "create": (
            keep_agent_refs_in_org,
            reserve_default_instance,
            seal_mcp_headers,
            create_default_instance,
        ),
        "update": (keep_agent_refs_in_org, seal_mcp_headers, follow_environment_refs),
    },
    indexes=(ENVIRONMENT_REFS,),
    redact=redact_mcp_headers,
    redacts=has_secret_headers,
    api_version="agentic.stigmer.ai/v1",
    plural="agents",
    aliases=("ag",),
    description="An AI agent: instructions, skills, MCP servers and environments.",
)

AGENT_INSTANCE = KindDeclaration(
    name="AgentInstance",
    resource=agentinstance_pb2.AgentInstance,
    command_service=instance_service.DESCRIPTOR.services_by_name["AgentInstanceCommandController"],
    query_service=instance_service.DESCRIPTOR.services_by_name["AgentInstanceQueryController"],
    id_prefix="ain",
    key_prefix="agentinstances",
    steps={
        "create": (check_agent_exists, own_by_agent, keep_environment_refs_in_org),
        "update": (keep_agent_id, keep_environment_refs_in_org),
        "delete": (refuse_default_instance_delete,),
    },
    references=(Reference("spec.agent_id", "Agent"),),
    indexes=(ENVIRONMENT_REFS,),
    api_version="agentic.stigmer.ai/v1",
    plural="agentinstances",
    aliases=("agent-instance", "agent-instances", "ai"),
    description="A deployment of an agent with its environments.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [AGENT, AGENT_INSTANCE]


@hookimpl
def stigmer_configure(registry: Registry) -> None:
    declare_sealed(registry, AGENT.name, reseal_mcp_headers)
