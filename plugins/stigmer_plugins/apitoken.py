"""The ApiToken kind: bearer tokens that act in one org with one role.

Create makes the token (``stg_…``) and answers it in ``status.token`` of
that response only. What is stored, and so what the event log, get, list
and every later response hold, is its SHA-256 digest, and responses blank
even that. The digest is indexed, which is how the ``Authenticator`` finds a
token in one lookup. Every rpc needs the admin role in the token's org; the
first admin token is made in-process (``stigmer token create`` against the
data directory), where the caller is the local administrator.

Role and expiry are fixed at create: an update may rename or relabel a
token, never widen it. ``revoke`` keeps the record (who revoked it, when)
and makes the token authenticate nobody; ``delete`` removes it.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import Message

from stigmer_core import (
    Access,
    CustomOperation,
    IndexSpec,
    InvalidArgument,
    KindDeclaration,
    Phase,
    RequestContext,
    hookimpl,
    step,
)
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.api.iam.apitoken.v1 import service_pb2 as token_service
from stigmer_core.auth import tokens
from stigmer_core.pipeline import steps as standard

ApiToken = apitoken_pb2.ApiToken
ISSUED = "stigmer.apitoken.issued"


@step(Phase.CHECK)
def check_expiry(ctx: RequestContext) -> None:
    given: Any = ctx.kind.resource_in(ctx.request)
    if given.spec.HasField("expires_at") and given.spec.expires_at.seconds <= time.time():
        raise InvalidArgument.field("spec.expires_at", "is in the past")


@step(Phase.KIND)
def issue(ctx: RequestContext) -> None:
    """Make the secret; only its digest is written."""
    token = tokens.new_token()
    resource: Any = ctx.resource
    resource.status.token_digest = tokens.digest(token)
    ctx.scratch[ISSUED] = token


@step(Phase.REDACT)
def show_once(ctx: RequestContext) -> None:
    """The create response, and it alone, carries the token."""
    token = ctx.scratch.get(ISSUED)
    if token is None or ctx.resource is None:
        return
    shown: Any = ApiToken()
    shown.CopyFrom(ctx.resource)
    shown.status.token = token
    ctx.resource = shown


@step(Phase.CHECK)
def keep_grant(ctx: RequestContext) -> None:
    """An update cannot change what a token may do: role and expiry are its grant."""
    given: Any = ctx.kind.resource_in(ctx.request)
    stored: Any = ctx.existing
    if given.HasField("spec") and given.spec != stored.spec:
        raise InvalidArgument.field("spec", "role and expiry are fixed when a token is made; make a new token")
    given.spec.CopyFrom(stored.spec)


def _forget_on_commit(ctx: RequestContext, token: Any) -> None:
    found = tokens.authenticator(ctx.registry)
    if found is not None:
        digest = token.status.token_digest
        ctx.store.txn.on_commit(lambda: found.forget(digest))  # type: ignore[attr-defined]


@step(Phase.PERSIST)
def revoke(ctx: RequestContext) -> None:
    stored: Any = ctx.existing
    ctx.resource = stored
    if stored.status.HasField("revoked_at"):
        return  # revoking twice changes nothing
    revoked: Any = ApiToken()
    revoked.CopyFrom(stored)
    revoked.status.revoked_at.GetCurrentTime()
    ctx.store.stamp_update(ctx.kind, revoked, principal=ctx.principal)
    ctx.store.replace(ctx.kind, stored, revoked)
    _forget_on_commit(ctx, stored)
    ctx.resource = revoked


def redact(token: Message) -> None:
    status: Any = token.status  # type: ignore[attr-defined]
    status.token = ""
    status.token_digest = ""


_ADMIN = Access.ADMIN

API_TOKEN = KindDeclaration(
    name="ApiToken",
    resource=ApiToken,
    command_service=token_service.DESCRIPTOR.services_by_name["ApiTokenCommandController"],
    query_service=token_service.DESCRIPTOR.services_by_name["ApiTokenQueryController"],
    id_prefix="tok",
    key_prefix="apitokens",
    exported=False,  # a credential: a backup must not bring a revoked or leaked token back
    steps={
        "create": (check_expiry, issue, show_once),
        "update": (keep_grant,),  # a deleted token, its owner's cascade too, is forgotten by the executor
    },
    operations={
        "revoke": CustomOperation(
            steps=(standard.validate, standard.load_by_id, revoke, standard.publish, standard.redact, standard.respond),
            writes=True,
            access=_ADMIN,
        ),
    },
    access={op: _ADMIN for op in ("create", "apply", "update", "delete", "get", "getByReference", "list")},
    indexes=(IndexSpec(tokens.DIGEST_INDEX, lambda t: [(t.status.token_digest,)], org_scoped=False),),  # type: ignore[attr-defined]
    redact=redact,
    api_version="iam.stigmer.ai/v1",
    plural="apitokens",
    aliases=("api-token", "api-tokens", "token", "tokens"),
    description="A bearer token acting in one org with one role (viewer, runner, editor, admin).",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [API_TOKEN]
