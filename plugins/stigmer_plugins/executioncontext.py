"""The ExecutionContext kind: the resolved values one execution runs with.

Any execution kind makes its context with ``create_execution_context`` from
one of its create steps, inside the same writing transaction: the values of
the environments in order (a later one overrides an earlier one), then the
execution's runtime values on top. The context is owned by the execution,
so it is deleted with it, and its slug is the execution's id.

Secret values are sealed with a key of their own run (``secrets``: a run
key, created with the context), bound to the context's id and key. The
``get`` rpc is the one way a runner receives them in clear, and only while
the execution is not terminal; list, getByReference, delete and every
stream return them redacted, and the event log keeps only redacted states.
When the execution ends its lifecycle erases them from the context and
destroys the run key (``seal_owned_contexts``); deleting a live execution
destroys it too. Every earlier copy of the values, such as the bytes of a
freed store page, is then ciphertext under a key that no longer exists, so
nothing secret outlives the run. Clients cannot create or change a
context: it is derived data.

An environment's secret may be *unset* (restored from a redacted export:
marked secret, stored without a value). It resolves like any value, so a
later environment or a runtime value for the same key replaces it; if it is
still what a key resolves to, the execution is refused with
FAILED_PRECONDITION naming the key and the environment, rather than run
with a secret it does not have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from google.protobuf.message import Message

from stigmer_core import (
    Access,
    CustomOperation,
    FailedPrecondition,
    IndexSpec,
    KindDeclaration,
    NotFound,
    Phase,
    RequestContext,
    step,
)
from stigmer_core.api.agentic.executioncontext.v1 import executioncontext_pb2
from stigmer_core.api.agentic.executioncontext.v1 import service_pb2 as context_service
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.ids import new_id
from stigmer_core.pipeline import steps as standard
from stigmer_core.store.protocol import WriteTxn
from stigmer_plugins.phases import is_terminal, phase_name
from stigmer_plugins.secrets import PREFIX, REDACTED, RUN_PREFIX, Reseal, SecretBox, Secrets, secrets

KIND = "ExecutionContext"
ENVIRONMENT = "Environment"
RUNTIME_SOURCE = "runtime"

ExecutionContext = executioncontext_pb2.ExecutionContext


def _secret_context(context_id: str, key: str) -> str:
    return f"{context_id}/{key}"


def _scope(ctx: RequestContext, context_id: str) -> str:
    """What the context's run key is filed under: the context's object key."""
    return f"{ctx.registry.kind(KIND).key_prefix}/{context_id}"


def _writer(ctx: RequestContext) -> WriteTxn:
    return cast(WriteTxn, ctx.store.txn)


def resolve_environment_refs(
    ctx: RequestContext, refs: Sequence[metadata_pb2.ApiResourceReference], *, org: str, field: str
) -> list[str]:
    """Environment ids for references (by id, else by org + slug), in order.

    ``field`` names where the references came from, for the error message.
    """
    if not refs:
        return []
    kind = ctx.registry.find(ENVIRONMENT)
    if kind is None:
        raise FailedPrecondition(f"{field} names environments, but no plugin serves the Environment kind")
    found = []
    for ref in refs:
        if ref.id:
            found.append(ref.id)
            continue
        env_id = ctx.store.id_for_slug(kind, ref.org or org, ref.slug)
        if env_id is None:
            raise NotFound(
                f"environment '{ref.slug}' not found in org '{ref.org or org}' ({field})",
                metadata={"kind": ENVIRONMENT, "slug": ref.slug, "org": ref.org or org, "field": field},
            )
        found.append(env_id)
    return found


def _environment_values(
    ctx: RequestContext, environment_ids: Sequence[str], org: str, keyring: Secrets
) -> tuple[dict[str, tuple[str, bool, str]], dict[str, str]]:
    """Values by key, with unset secrets also kept apart (key -> environment slug): a later
    environment or a runtime value may still give the key a value, so refusing waits for those."""
    if not environment_ids:
        return {}, {}
    kind = ctx.registry.find(ENVIRONMENT)
    if kind is None:
        raise FailedPrecondition("an execution names environments, but no plugin serves the Environment kind")
    values: dict[str, tuple[str, bool, str]] = {}
    unset: dict[str, str] = {}
    for env_id in environment_ids:
        env: Any = ctx.store.get(kind, env_id)
        if env is None or env.metadata.org != org:
            raise NotFound(
                f"environment '{env_id}' not found in org '{org}'", metadata={"kind": ENVIRONMENT, "id": env_id}
            )
        for key, item in env.spec.data.items():
            value = item.value
            unset.pop(key, None)
            if item.is_secret and SecretBox.is_encrypted(value):
                value = keyring.unseal(ctx.store.txn, value, f"{env_id}/{key}")
            elif item.is_secret:  # only ciphertext is stored for a secret that has a value
                unset[key] = env.metadata.slug
            values[key] = (value, item.is_secret, env_id)
    return values, unset


MAX_VALUES = 512
"""``ExecutionContextSpec.data``'s ``max_pairs``: a run merges its environments (256 keys each, up to
64 of them) and its runtime values into one context, which must keep its own rules."""


def _refuse_unset(unset: Mapping[str, str]) -> None:
    if not unset:
        return
    key, slug = min(unset.items())
    raise FailedPrecondition(
        f"secret '{key}' of environment '{slug}' is unset (restored without its value); "
        "set it in the environment, or give it in the execution's runtime_env"
    )


def create_execution_context(
    ctx: RequestContext,
    *,
    execution_kind: str,
    execution: Message,
    environment_ids: Sequence[str],
    runtime_env: Mapping[str, tuple[str, bool]],
) -> str:
    """Create, in ctx's writing transaction, the context ``execution`` runs with; return its id.

    ``execution`` must already carry its id and org (call this after the
    create pipeline's BUILD phase). ``runtime_env`` maps a key to its clear
    value and whether it is secret; it overrides the environments' values.
    """
    meta: Any = execution.metadata  # type: ignore[attr-defined]
    keyring = secrets(ctx.registry)
    values, unset = _environment_values(ctx, environment_ids, meta.org, keyring)
    for key, (value, is_secret) in runtime_env.items():
        values[key] = (value, is_secret, RUNTIME_SOURCE)
        unset.pop(key, None)
    _refuse_unset(unset)
    if len(values) > MAX_VALUES:
        raise FailedPrecondition(
            f"this run's {len(environment_ids)} environments and its runtime_env hold {len(values)} keys together, "
            f"more than the {MAX_VALUES} its execution context holds: reference fewer or smaller environments",
            reason="CONTEXT_TOO_MANY_VALUES",
            metadata={"keys": len(values), "limit": MAX_VALUES, "environments": len(environment_ids)},
        )
    kind = ctx.registry.kind(KIND)
    context = ExecutionContext()
    context.metadata.id = new_id(kind.id_prefix)
    context.metadata.name = f"Context of {meta.name}"[:253]
    context.metadata.slug = meta.id
    context.metadata.owner_references.add(kind=execution_kind, id=meta.id)
    context.spec.execution_id = meta.id
    context.spec.execution_kind = execution_kind
    context.spec.environment_ids.extend(environment_ids)
    run_box = None
    if any(is_secret for _, is_secret, _ in values.values()):
        run_box = keyring.new_run_box(_writer(ctx), _scope(ctx, context.metadata.id))
    for key, (value, is_secret, source) in values.items():
        stored = value
        if is_secret:
            assert run_box is not None
            stored = run_box.encrypt(value, _secret_context(context.metadata.id, key))
        item = context.spec.data[key]
        item.value, item.is_secret, item.source = stored, is_secret, source
    ctx.store.create(kind, context, org=meta.org, principal=ctx.principal)
    return str(context.metadata.id)


def _has_run_key(context: Message | None) -> bool:
    """Whether a run key seals some of the context's values (a run without secrets has none)."""
    data: Any = context.spec.data if context is not None else {}  # type: ignore[attr-defined]
    return any(item.is_secret and item.value.startswith(RUN_PREFIX) for item in data.values())


def seal_owned_contexts(ctx: RequestContext, execution_id: str) -> None:
    """Erase the secret values of the contexts ``execution_id`` owns (it has ended) and
    destroy their run keys once this transaction commits."""
    keyring = secrets(ctx.registry)
    for kind, context_id in ctx.store.owned(execution_id):
        if kind.name != KIND:
            continue
        stored: Any = ctx.store.get(kind, context_id)
        if stored is None:  # pragma: no cover - ownership entries go with their object
            continue
        if _has_run_key(stored):
            keyring.end_run(_writer(ctx), _scope(ctx, context_id))
        sealed = ExecutionContext()
        sealed.CopyFrom(stored)
        redact(sealed)
        if sealed != stored:
            ctx.store.stamp_update(kind, sealed, principal=ctx.principal)
            ctx.store.replace(kind, stored, sealed)


def reseal_legacy(obj: Message, reseal: Reseal) -> bool:
    """Key rotation's walk: values an older version sealed with the data-directory key."""
    context: Any = obj
    changed = False
    for key, item in context.spec.data.items():
        if item.is_secret and item.value.startswith(PREFIX):
            item.value = reseal(item.value, _secret_context(context.metadata.id, key))
            changed = True
    return changed


def redact(context: Message) -> None:
    """Every secret value becomes the redaction marker."""
    for item in context.spec.data.values():  # type: ignore[attr-defined]
        if item.is_secret:
            item.value = REDACTED


def _execution(ctx: RequestContext, context: Any) -> Message | None:
    kind = ctx.registry.find(context.spec.execution_kind)
    return None if kind is None else ctx.store.get(kind, context.spec.execution_id)


def _is_live(execution: Message | None) -> bool:
    return execution is not None and not is_terminal(execution.status.phase)  # type: ignore[attr-defined]


@step(Phase.REDACT)
def reveal_secrets_while_live(ctx: RequestContext) -> None:
    """``get`` of a live execution's context, by a runner of its org: the stored secrets, decrypted.

    Runs after the standard redaction, from the stored object it left alone.
    Any other caller (a viewer, an editor) gets the redacted context.
    """
    stored: Any = ctx.existing
    if stored is None or not ctx.caller.can(Access.RUN, stored.metadata.org):
        return
    if not _is_live(_execution(ctx, stored)):
        return
    keyring = secrets(ctx.registry)
    context_id = stored.metadata.id
    run_box = keyring.run_box(ctx.store.txn, _scope(ctx, context_id))
    shown = ExecutionContext()
    shown.CopyFrom(stored)
    for key, item in shown.spec.data.items():
        if not item.is_secret:
            continue
        if item.value.startswith(RUN_PREFIX):
            if run_box is None:
                raise FailedPrecondition(
                    f"the run key of execution context '{stored.metadata.slug}' is gone, so its secrets cannot "
                    "be opened; create a new execution"
                )
            item.value = run_box.decrypt(item.value, _secret_context(context_id, key))
        elif item.value.startswith(PREFIX):  # sealed by an older version with the data-directory key
            item.value = keyring.unseal(ctx.store.txn, item.value, _secret_context(context_id, key))
    ctx.resource = shown


@step(Phase.KIND)
def shred_owned_contexts(ctx: RequestContext) -> None:
    """A delete step of an execution kind: a live execution's contexts go with it
    (by cascade), so their run keys are destroyed with them."""
    execution: Any = ctx.existing
    keyring = secrets(ctx.registry)
    for kind, context_id in ctx.store.owned(execution.metadata.id):
        if kind.name == KIND and _has_run_key(ctx.store.get(kind, context_id)):
            keyring.end_run(_writer(ctx), _scope(ctx, context_id))


@step(Phase.KIND)
def refuse_delete_while_live(ctx: RequestContext) -> None:
    """A runner is reading this context until its execution ends."""
    context: Any = ctx.existing
    execution: Any = _execution(ctx, context)
    if _is_live(execution):
        # named by its id as the caller sent it: its slug is its execution's id, which read as
        # another object's
        raise FailedPrecondition(
            f"execution context '{context.metadata.id}' belongs to {context.spec.execution_kind} "
            f"'{execution.metadata.slug}' ({execution.metadata.id}), which is {phase_name(execution.status.phase)} "
            "and has not ended; cancel or delete the execution instead (its context goes with it)",
            reason=RUN_LIVE,
            metadata={
                "kind": KIND,
                "id": context.metadata.id,
                "executionKind": context.spec.execution_kind,
                "executionId": execution.metadata.id,
                "phase": phase_name(execution.status.phase),
            },
        )


RUN_LIVE = "RUN_LIVE"


@step(Phase.CHECK)
def refuse_client_writes(ctx: RequestContext) -> None:
    """After validation and every authorization step, so those answer first."""
    raise FailedPrecondition(
        "execution contexts are made by the server when an execution is created "
        "(from its instance's environments and runtime_env); create the execution instead"
    )


_REFUSED = CustomOperation(steps=(standard.validate, standard.authorize, refuse_client_writes))

EXECUTION_CONTEXT = KindDeclaration(
    name=KIND,
    resource=ExecutionContext,
    command_service=context_service.DESCRIPTOR.services_by_name["ExecutionContextCommandController"],
    query_service=context_service.DESCRIPTOR.services_by_name["ExecutionContextQueryController"],
    id_prefix="exc",
    key_prefix="executioncontexts",
    exported=False,  # a run-time record, not configuration
    operations={"create": _REFUSED, "apply": _REFUSED, "update": _REFUSED},
    steps={"get": (reveal_secrets_while_live,), "delete": (refuse_delete_while_live,)},
    indexes=(IndexSpec("execution", lambda c: [(c.spec.execution_id,)], org_scoped=False),),  # type: ignore[attr-defined]
    list_filters={"execution_id": "execution"},
    redact=redact,
    api_version="agentic.stigmer.ai/v1",
    plural="executioncontexts",
    aliases=("execution-context", "execution-contexts", "exctx"),
    description="The resolved values (environments, then runtime values) one execution runs with.",
)
