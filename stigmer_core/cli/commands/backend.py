"""``stigmer backend``: which server the other commands talk to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import (
    BACKENDS,
    client_certificate_options,
    common_options,
    overrides,
    pair_of_files,
    verbose_option,
)


@click.group()
def backend() -> None:
    """Show or change the backend: the local store, or a remote server."""


def _lines(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in pairs)


def checked_token(token: str) -> str:
    """The token as a header carries it, or a usage error naming what it holds."""
    from stigmer_core.auth.transport import usable_token
    from stigmer_core.errors import StartupError

    try:
        return usable_token(token)
    except StartupError as exc:
        raise CliError(exc.message, exit_code=2) from None


def valid_endpoint(endpoint: str) -> None:
    from stigmer_core.config_file import endpoint_problem

    problem = endpoint_problem(endpoint)
    if problem is not None:
        raise CliError(problem, exit_code=2)


@backend.command()
@common_options
@click.pass_context
def status(ctx: click.Context) -> None:
    """Which backend is in use, and whether it answers."""
    from stigmer_core import config
    from stigmer_core.cli import daemon
    from stigmer_core.cli.errors import CA_WANTED_TOO, CLIENT_CERTIFICATE_WANTED, tls_trouble

    flags = overrides(ctx)
    settings = config.resolve(
        backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir, org=flags.org, ca_file=flags.ca_file
    )
    pairs = [("backend", settings.backend)]
    if settings.backend == config.LOCAL:
        found = daemon.running(settings.data_dir)
        pairs.append(("data directory", str(settings.data_dir)))
        if found is not None and found.address:
            pairs.append(("daemon", f"running (pid {found.pid}) on {found.address}"))
        else:
            pairs.append(("daemon", "not running: commands open the store in process"))
    else:
        pairs.append(("endpoint", settings.endpoint or "(not set)"))
        pairs.append(("token", "set" if settings.token else "not set"))
        why: list[str] = []
        status = (
            daemon.health(settings.endpoint, timeout=3.0, why=why, **_tls_files(settings))
            if settings.endpoint
            else None
        )
        trouble = tls_trouble(why[0]) if why else None
        if why and trouble is None and "socket closed" in why[0].lower():
            from stigmer_core.auth.transport import asks_client_certificate

            if asks_client_certificate(settings.endpoint):
                from stigmer_core.client import dialled_in_plaintext

                trouble = CLIENT_CERTIFICATE_WANTED
                if dialled_in_plaintext(settings.endpoint):
                    trouble += CA_WANTED_TOO
        said = {
            None: f"not reachable: TLS: {trouble}" if trouble else "not reachable",
            "SERVING": "serving",
            "NOT_SERVING": (
                "answers, but NOT_SERVING: its store cannot serve (a team server whose database does not answer it, "
                "or whose schema a newer release migrated)"
            ),
        }
        pairs.append(("server", said.get(status, f"answers, health {status}")))
        if settings.token and status is not None:
            pairs.append(("caller", _caller(settings.endpoint, settings.token, _tls_files(settings))))
    pairs += [("org", settings.org), ("config file", str(settings.config_file))]
    click.echo(_lines(pairs))


def _tls_files(settings: Any) -> dict[str, str | None]:
    return {
        "ca_file": settings.ca_file or None,
        "cert_file": settings.cert_file or None,
        "key_file": settings.key_file or None,
    }


def _caller(endpoint: str, token: str, tls_files: dict[str, str | None]) -> str:
    """Who the server takes the token for, or why it refuses it (a revoked or expired token)."""
    from stigmer_core import errors
    from stigmer_core.cli.identity import describe_identity, whoami_of
    from stigmer_core.client import connect

    try:
        files = tls_files
        with connect(
            endpoint, token=token, ca_file=files["ca_file"], cert_file=files["cert_file"], key_file=files["key_file"]
        ) as client:
            return describe_identity(whoami_of(client.channel, endpoint))
    except (CliError, errors.StigmerError) as exc:  # the refusal is this line's answer; status still succeeds
        return f"refused: {exc.message}"


@backend.command()
@click.argument("kind", metavar="local|remote", type=click.Choice(BACKENDS))
@click.option("--endpoint", metavar="HOST:PORT", help="The remote server (remote backend).")
@click.option("--token", help="Bearer token sent to the remote server.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM of a private CA that signed the remote server's certificate.",
)
@client_certificate_options
@click.option("--data-dir", help="The local data directory (local backend).")
@verbose_option
def switch(
    kind: str,
    endpoint: str | None,
    token: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    data_dir: str | None,
) -> None:
    """Make the local store or a remote server the backend of every later command.

    A new endpoint drops the token, CA file and client certificate kept for the old one (a token
    goes only to the server it was made for): give --token (and --ca-file, --cert-file and
    --key-file) again, or use `stigmer login`.
    """
    from stigmer_core import config
    from stigmer_core.config_file import follow_backend_org, pick

    data: dict[str, Any] = config.load_config()
    if endpoint is not None:
        valid_endpoint(endpoint)
    follow_backend_org(data, kind, config.DEFAULT_ORG)
    cert_file, key_file = pair_of_files(cert_file, key_file)
    remote = dict(data.get("remote") or {})
    local = dict(data.get("local") or {})
    dropped = []
    if endpoint and endpoint != remote.get("endpoint"):
        dropped = [name for name in ("token", "ca_file", "cert_file", "key_file") if remote.pop(name, None) is not None]
        remote["endpoint"] = endpoint
    if token is not None:
        remote["token"] = checked_token(token)
    if ca_file:
        remote["ca_file"] = str(Path(ca_file).resolve())
    if cert_file and key_file:
        remote["cert_file"], remote["key_file"] = cert_file, key_file
    dropped = [name for name in dropped if name not in remote]
    if data_dir:
        local["data_dir"] = data_dir
    if kind == config.REMOTE and not remote.get("endpoint"):
        raise CliError("the remote backend needs an endpoint: `stigmer backend switch remote --endpoint HOST:PORT`")
    data["backend"] = {**dict(data.get("backend") or {}), "type": kind}
    for name, section in (("local", local), ("remote", remote)):
        if section:
            data[name] = section
    path = config.save_config(data)
    where = remote["endpoint"] if kind == config.REMOTE else local.get("data_dir") or "the default data directory"
    click.echo(f"backend: {kind} ({where}); saved in {path}")
    org = pick(None, "org", data.get("org"), config.DEFAULT_ORG)
    from_env = " (from $STIGMER_ORG)" if org != data.get("org", config.DEFAULT_ORG) else ""
    click.echo(f"org: {org}{from_env}")
    if dropped:
        words = [n.replace("_", " ") for n in dropped]
        names = " and ".join(filter(None, (", ".join(words[:-1]), words[-1])))
        click.echo(
            f"the {names} kept for the previous endpoint {'were' if len(dropped) > 1 else 'was'} dropped", err=True
        )
