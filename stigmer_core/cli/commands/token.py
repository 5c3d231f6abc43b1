"""``stigmer token create|list|revoke``: API tokens of an org.

They are ``ApiToken`` objects on whatever backend is configured. Against
the local data directory with no daemon running (or through the daemon's
Unix socket) the caller is the local administrator, which is how the first
admin token of a new team server is made.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from stigmer_core.auth.roles import ROLES
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import common_options

if TYPE_CHECKING:  # `stigmer --help` imports this module: grpc and the messages load when a command runs
    from stigmer_core.cli.session import Session

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``: seconds."""
    found = _DURATION.match(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise CliError(f"invalid duration '{text}': use a number and one of s, m, h, d, w (e.g. 90d)", exit_code=2)
    return int(found.group(1)) * _SECONDS[found.group(2)]


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (each acts in one org with one role)."""


_WHO = re.compile(r"^(?P<who>\S+ \([^)]*\)) lacks |^(?P<held>\S+ is \w+ in org '[^']*'), which does not allow ")
"""Who the server says was refused: ``token:acme/ro (viewer in acme)`` of a role that allows the
rpc in no org, ``token:acme/ro is viewer in org 'acme'`` of one that allows it elsewhere."""


def _call(session: Session, fn: Any, request: Any, action: str) -> Any:
    """``fn(request)``; a role without admin access is told what ``action`` needs, not which rpc
    (revoking by name reads the token first, with a query the user never asked for)."""
    import grpc

    from stigmer_core import errors
    from stigmer_core.cli.errors import from_rpc

    try:
        return fn(request)
    except grpc.RpcError as exc:
        error = from_rpc(exc, session.target)
        if not isinstance(error, errors.PermissionDenied):
            raise error from exc
        found = _WHO.match(error.message)
        who = "" if found is None else f": {found['who']} does not have it" if found["who"] else f": {found['held']}"
        raise CliError(f"{action} needs admin access in org '{session.org}'{who}") from exc


@token.command()
@click.option("--role", type=click.Choice(sorted(ROLES)), required=True, help="What the token may do in its org.")
@click.option("--name", help="What the token is for (default: '<role> token').")
@click.option("--expires", metavar="DURATION", help="Lifetime, e.g. 90d, 12h (default: never expires).")
@common_options
@click.pass_context
def create(ctx: click.Context, role: str, name: str | None, expires: str | None) -> None:
    """Make a token and print it once: it cannot be shown again."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
    from stigmer_core.api.iam.apitoken.v1 import service_pb2_grpc as token_grpc
    from stigmer_core.cli.session import Session

    session = Session.of(ctx)
    made = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role=role))
    made.metadata.name = name or f"{role} token"
    made.metadata.org = session.org
    lifetime = parse_duration(expires) if expires else None  # a mistyped duration before the store opens
    stub = session.client.stub(token_grpc.ApiTokenCommandControllerStub)
    if lifetime is not None:  # counted from the call, not from before the store opened: `--expires 1s` holds
        when = Timestamp()
        when.GetCurrentTime()
        when.seconds += lifetime
        made.spec.expires_at.CopyFrom(when)
    created = _call(session, stub.create, made, "making a token")
    click.echo(created.status.token)
    click.echo(
        f"token/{created.metadata.slug} ({role} in org {created.metadata.org}, id {created.metadata.id}) created; "
        "the token above is shown only now",
        err=True,
    )


@token.command(name="list")
@common_options
@click.pass_context
def list_(ctx: click.Context) -> None:
    """The org's tokens (never their secrets)."""
    import time

    from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
    from stigmer_core.api.iam.apitoken.v1 import service_pb2_grpc as token_grpc
    from stigmer_core.cli import render
    from stigmer_core.cli.session import Session

    session = Session.of(ctx, needs_store="token list")
    stub = session.client.stub(token_grpc.ApiTokenQueryControllerStub)
    rows = []
    request = apitoken_pb2.ListApiTokensRequest(org=session.org)
    now = time.time()
    while True:
        page = _call(session, stub.list, request, "listing tokens")
        for found in page.entries:
            ends = found.spec.HasField("expires_at")
            expires = found.spec.expires_at.ToJsonString() if ends else "never"
            if found.status.HasField("revoked_at"):
                state = "revoked"
            elif ends and found.spec.expires_at.seconds <= now:  # as the server sees it: refused from then on
                state = "expired"
            else:
                state = "active"
            rows.append([found.metadata.slug, found.metadata.id, found.spec.role, expires, state])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    click.echo(render.table(["NAME", "ID", "ROLE", "EXPIRES", "STATE"], rows))


@token.command()
@click.argument("token_ref", metavar="NAME|ID")
@common_options
@click.pass_context
def revoke(ctx: click.Context, token_ref: str) -> None:
    """Revoke a token: every later call with it is UNAUTHENTICATED."""
    from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
    from stigmer_core.api.iam.apitoken.v1 import service_pb2_grpc as token_grpc
    from stigmer_core.cli.session import Session

    session = Session.of(ctx, needs_store="token revoke")
    queries = session.client.stub(token_grpc.ApiTokenQueryControllerStub)
    commands = session.client.stub(token_grpc.ApiTokenCommandControllerStub)
    if token_ref.startswith("tok-"):
        token_id = token_ref
    else:
        from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

        ref = metadata_pb2.ApiResourceReference(org=session.org, slug=token_ref)
        token_id = _call(session, queries.getByReference, ref, "revoking a token").metadata.id
    from stigmer_core.cli.identity import whoami_of

    caller = whoami_of(session.client.channel, session.target).principal  # before: after, it is refused
    revoked = _call(session, commands.revoke, apitoken_pb2.ApiTokenId(value=token_id), "revoking a token")
    click.echo(f"token/{revoked.metadata.slug} revoked")
    if caller == f"token:{revoked.metadata.org}/{revoked.metadata.slug}":  # its next command is refused
        click.echo(
            f"note: token/{revoked.metadata.slug} is the token this command was sent with: the next command "
            "sent with it is refused; log in with another (`stigmer login --token …`)",
            err=True,
        )
