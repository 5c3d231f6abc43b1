"""The Environment kind: named values an agent or workflow runs with.

A value marked ``is_secret`` is encrypted before it is stored (AES-GCM,
``secrets.box``), bound to ``<environment id>/<key>``: that is the only
form in the store, the event log and every copy of the object. Every
response carries the redaction marker in its place (the declaration's
``redact``, which get, list, delete and the write rpcs all apply), so no rpc,
export or log line holds a secret in clear; execution contexts decrypt
them inside the writing transaction.

Writing the marker back keeps the stored secret, so a document read from
the server can be edited and applied without resending every secret;
sending the same clear value again keeps the stored ciphertext too, so an
update that changes nothing writes nothing.

The marker for a key with no stored secret (a redacted export restored into
another store) cannot bring the value back, yet refusing it would make such
a backup impossible to restore. The secret is kept *unset* instead: marked
secret, stored without a value, answered as the marker like any other, and
listed in ``status.unset_secrets`` so people can see what to set again. A
later clear value sets it; executions refuse to run with it unset
(``executioncontext``).
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.message import Message

from stigmer_core import (
    FailedPrecondition,
    IndexSpec,
    InvalidArgument,
    KindDeclaration,
    Phase,
    RequestContext,
    hookimpl,
    step,
)
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.environment.v1 import service_pb2 as environment_service
from stigmer_core.kinds.resources import Resources
from stigmer_core.kinds.runtime import KindRuntime, Registry
from stigmer_core.store.protocol import WriteTxn
from stigmer_plugins.references import keep_refs_in_org
from stigmer_plugins.secrets import PREFIX, REDACTED, Reseal, SecretBox, declare_sealed, keeps_sealed, secrets


def secret_context(environment_id: str, key: str) -> str:
    """What a stored secret is bound to (the associated data of its AES-GCM seal)."""
    return f"{environment_id}/{key}"


def _environment(obj: Message | None) -> environment_pb2.Environment:
    assert isinstance(obj, environment_pb2.Environment)
    return obj


def _stored_secret(stored: environment_pb2.Environment | None, key: str) -> str | None:
    if stored is None or key not in stored.spec.data:
        return None
    item = stored.spec.data[key]
    return item.value if item.is_secret and SecretBox.is_encrypted(item.value) else None


def _was_secret(stored: environment_pb2.Environment | None, key: str) -> bool:
    return stored is not None and key in stored.spec.data and stored.spec.data[key].is_secret


def _is_unset(item: environment_pb2.EnvironmentValue) -> bool:
    """A secret without a value: only ciphertext is ever stored for a set one."""
    return item.is_secret and not SecretBox.is_encrypted(item.value)


@step(Phase.KIND)
def seal_secrets(ctx: RequestContext) -> None:
    """Encrypt secret values; keep the stored ciphertext for the marker or an unchanged value."""
    env = _environment(ctx.resource)
    data = env.spec.data
    if not data:
        del env.status.unset_secrets[:]
        return
    stored = _environment(ctx.existing) if ctx.existing is not None else None
    unset = []
    for key in data:  # per value, only the work its case needs: most values are plain ones
        item = data[key]
        if not item.is_secret:
            if item.value == REDACTED and _was_secret(stored, key):
                raise InvalidArgument.field(
                    f'spec.data["{key}"].value',
                    "is the redaction marker of a stored secret; send the clear value to store it unencrypted",
                )
            continue
        kept = _stored_secret(stored, key)
        if item.value == REDACTED:
            item.value = kept if kept is not None else ""  # nothing to keep: the secret stays unset
        else:
            keyring = secrets(ctx.registry)
            txn = cast(WriteTxn, ctx.store.txn)
            context = secret_context(env.metadata.id, key)
            if kept is not None and keeps_sealed(
                ctx.caller, env.metadata.org, keyring.check(txn), kept, item.value, context
            ):
                item.value = kept
            else:
                item.value = keyring.seal(txn, item.value, context)
        if _is_unset(item):
            unset.append(key)
    del env.status.unset_secrets[:]
    env.status.unset_secrets.extend(sorted(unset))


ENVIRONMENT_REFS_INDEX = "environment_refs"


def _environment_ref_values(obj: Message) -> list[tuple[str, ...]]:
    """The environments ``spec.environment_refs`` names: by id, else by org + slug (as executions resolve them)."""
    resource: Any = obj
    found: list[tuple[str, ...]] = []
    for ref in resource.spec.environment_refs:
        if ref.id:
            found.append(("id", ref.id))
        elif ref.slug:
            found.append(("slug", ref.org or resource.metadata.org, ref.slug))
    return found


ENVIRONMENT_REFS = IndexSpec(ENVIRONMENT_REFS_INDEX, _environment_ref_values, org_scoped=False)
"""Declared by every kind whose ``spec.environment_refs`` names environments, so
an environment in use cannot be deleted (``refuse_delete_while_referenced``)."""


@step(Phase.KIND)
def keep_environment_refs_in_org(ctx: RequestContext) -> None:
    """References never cross orgs: an object names environments of its own org only.

    Executions resolve a reference in the object's org, and an environment's
    delete is refused while something names it, so a reference into another
    org would let that org's callers keep an environment they cannot see from
    being deleted. A reference by id whose environment the caller cannot see
    is left as it is (``references.keep_refs_in_org``); it holds nothing: the
    delete check counts referrers of the same org only.
    """
    keep_refs_in_org(ctx, "environment_refs", ENVIRONMENT.name, "an environment")


def _default_instance_of(store: Resources, referrer: Any) -> tuple[KindRuntime, Any] | None:
    """The owner ``referrer`` is the default instance of (its ``status.default_instance_id``).

    A default instance lives as long as its owner, so the way out of a
    refusal it causes is an edit, never its delete.
    """
    for ref in referrer.metadata.owner_references:
        owner_kind = store.registry.find(ref.kind)
        owner: Any = None if owner_kind is None else store.get(owner_kind, ref.id)
        status = getattr(owner, "status", None)
        if owner_kind is not None and getattr(status, "default_instance_id", None) == referrer.metadata.id:
            return owner_kind, owner
    return None


def _refusal(
    store: Resources, env: environment_pb2.Environment, kind: KindRuntime, referrer: Any
) -> FailedPrecondition:
    """What a refused delete says: who holds the environment, and the edit that frees it."""
    meta = env.metadata
    held = (
        f"environment '{meta.slug}' is still referenced by {kind.label} '{referrer.metadata.slug}' "
        "(spec.environment_refs)"
    )
    detail = {"kind": ENVIRONMENT.name, "id": meta.id, "referrerKind": kind.name, "field": "spec.environment_refs"}
    found = _default_instance_of(store, referrer)
    if found is None:
        way = "remove it from there first"
    else:
        owner_kind, owner = found
        detail["defaultInstanceOf"] = owner_kind.name
        held += f", the default instance of {owner_kind.label} '{owner.metadata.slug}'"
        way = f"remove it from the instance's spec.environment_refs (it goes only with its {owner_kind.label})"
    return FailedPrecondition(f"{held}; {way}", reason="REFERENCED", metadata=detail)


def refuse_delete_while_referenced(store: Resources, obj: Message, inside: frozenset[str]) -> None:
    """An environment that agents, instances or workflows still name cannot be deleted (the
    kind's ``delete_guard``): not by its own delete, nor with an owner whose delete takes it.

    Executions resolve the references when they are created, so a deleted
    environment would only show up as a run that cannot start. Any kind that
    declares the ``ENVIRONMENT_REFS`` index is looked up, through that index;
    a referrer the same delete removes (``inside``) holds nothing. A default
    instance is named only when nothing else holds the environment: an agent
    naming it is where the edit belongs (its default instance follows it).
    """
    env = _environment(obj)
    meta = env.metadata
    last: FailedPrecondition | None = None
    for kind in store.registry.kinds:
        if not any(index.name == ENVIRONMENT_REFS_INDEX for index in kind.indexes):
            continue
        for value in (("id", meta.id), ("slug", meta.org, meta.slug)):
            for referrer_id in store.scan_index(kind, ENVIRONMENT_REFS_INDEX, value):
                if referrer_id in inside:
                    continue
                referrer: Any = store.get(kind, referrer_id)
                if referrer is None or referrer.metadata.org != meta.org:
                    continue  # another org's object (written before references were kept in their org)
                refusal = _refusal(store, env, kind, referrer)
                if "defaultInstanceOf" not in refusal.metadata:
                    raise refusal
                last = last or refusal
    if last is not None:
        raise last


def redact_secrets(obj: Message) -> None:
    """Every secret value becomes the redaction marker."""
    for item in _environment(obj).spec.data.values():
        if item.is_secret:
            item.value = REDACTED


def has_secrets(obj: Message) -> bool:
    """Whether ``redact_secrets`` would blank anything: an environment with no secret value is
    answered, and logged in events, as it is stored, without a redacted copy of it made first."""
    data = _environment(obj).spec.data
    for key in data:  # noqa: SIM110 - a loop by key: any() over a generator, or over a map's values(), costs more
        if data[key].is_secret:
            return True
    return False


def reseal_secrets(obj: Message, reseal: Reseal) -> bool:
    """Key rotation's walk over the sealed values (``secrets.declare_sealed``)."""
    env = _environment(obj)
    changed = False
    for key, item in env.spec.data.items():
        if item.is_secret and item.value.startswith(PREFIX):
            resealed = reseal(item.value, secret_context(env.metadata.id, key))
            changed = changed or resealed != item.value
            item.value = resealed
    return changed


ENVIRONMENT = KindDeclaration(
    name="Environment",
    resource=environment_pb2.Environment,
    command_service=environment_service.DESCRIPTOR.services_by_name["EnvironmentCommandController"],
    query_service=environment_service.DESCRIPTOR.services_by_name["EnvironmentQueryController"],
    id_prefix="env",
    key_prefix="environments",
    steps={"create": (seal_secrets,), "update": (seal_secrets,)},
    delete_guard=refuse_delete_while_referenced,
    redact=redact_secrets,
    redacts=has_secrets,
    api_version="agentic.stigmer.ai/v1",
    plural="environments",
    aliases=("env", "envs"),
    description="Named values (secrets encrypted at rest) that agents and workflows run with.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [ENVIRONMENT]


@hookimpl
def stigmer_configure(registry: Registry) -> None:
    declare_sealed(registry, ENVIRONMENT.name, reseal_secrets)
