"""``stigmer login`` and ``stigmer whoami``: a team server and who it takes you for."""

from __future__ import annotations

from typing import Any

import click

from stigmer_core.cli.commands.backend import checked_token, valid_endpoint
from stigmer_core.cli.errors import CliError, Unreachable
from stigmer_core.cli.identity import describe_identity, whoami_of
from stigmer_core.cli.options import (
    EnvOption,
    client_certificate_options,
    common_options,
    pair_of_files,
    verbose_option,
)


@click.command()
@click.option("--endpoint", required=True, metavar="HOST:PORT", help="The team server.")
@click.option(
    "--token",
    cls=EnvOption, envvar="STIGMER_TOKEN",
    help="An API token (stg_…) from `stigmer token create`; else $STIGMER_TOKEN, else asked for (not echoed).",
)
@click.option(
    "--ca-file",
    cls=EnvOption, envvar="STIGMER_CA_FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM of a private CA that signed the server's certificate; else $STIGMER_CA_FILE.",
)
@client_certificate_options
@verbose_option
def login(endpoint: str, token: str | None, ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """Check a token against a server, then make that server the backend (config file, mode 0600).

    A token on the command line stays in the shell's history and is shown to other users by
    `ps`: prefer $STIGMER_TOKEN, or leave both out and paste it when asked.
    """
    import sys
    from pathlib import Path

    from stigmer_core import config
    from stigmer_core.client import connect
    from stigmer_core.config_file import follow_backend_org

    valid_endpoint(endpoint)
    cert_file, key_file = pair_of_files(cert_file, key_file)
    if token is None:
        if not sys.stdin.isatty():
            raise click.UsageError("give the token with --token, $STIGMER_TOKEN, or on a terminal when asked")
        token = str(click.prompt("API token", hide_input=True))
    token = checked_token(token)
    ca_file = str(Path(ca_file).resolve()) if ca_file else None  # commands run from anywhere later
    try:
        with connect(endpoint, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file) as client:
            identity = whoami_of(client.channel, endpoint)
    except Unreachable as unreachable:  # the server named here, not the configured backend's
        unreachable.dialled_by_command = True
        raise
    data: dict[str, Any] = config.load_config()
    follow_backend_org(data, config.REMOTE, config.DEFAULT_ORG)
    remote: dict[str, Any] = {**dict(data.get("remote") or {}), "endpoint": endpoint, "token": token}
    for name, file in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if file:
            remote[name] = file
        else:
            remote.pop(name, None)
    data["remote"] = remote
    data["backend"] = {**dict(data.get("backend") or {}), "type": config.REMOTE}
    orgs = [b.org for b in identity.roles]
    if len(orgs) == 1:
        data["org"] = remote["org"] = orgs[0]
    path = config.save_config(data)
    click.echo(f"logged in to {endpoint} as {describe_identity(identity)}; saved in {path}")
    if identity.HasField("tokens_required"):
        open_to_anyone = not identity.tokens_required
    else:  # a server older than the field: ask it as a caller without a token (it logs a denial)
        open_to_anyone = _open_to_anyone(endpoint, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    if open_to_anyone:
        click.echo(
            click.style("stigmer: ", fg="yellow", bold=True)
            + f"the server at {endpoint} does not require tokens: a caller without one is its administrator "
            "(start it with --require-auth, or `server: require_auth: true` in its config file)",
            err=True,
        )


def _open_to_anyone(endpoint: str, **tls_files: str | None) -> bool:
    """Whether the server takes a caller without a token for its administrator (no --require-auth):
    the token just checked is then no protection at all."""
    from stigmer_core import errors
    from stigmer_core.client import connect

    try:
        with connect(
            endpoint, ca_file=tls_files["ca_file"], cert_file=tls_files["cert_file"], key_file=tls_files["key_file"]
        ) as client:
            return bool(whoami_of(client.channel, endpoint).administrator)
    except (CliError, errors.StigmerError):
        return False


@click.command()
@common_options
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Who the backend takes you for: the principal, its orgs and roles."""
    from stigmer_core.cli.session import Session

    session = Session.of(ctx)
    target = session.target
    identity = whoami_of(session.client.channel, target)
    if not identity.principal:
        raise CliError(f"{target} answered no identity")
    click.echo(describe_identity(identity))
