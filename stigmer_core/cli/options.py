"""Options every command takes, collected in one place on the click context.

They are declared per command (not on the group) so they can be written
after the command name, as in ``stigmer get agent --org acme``; their values
land in one ``Overrides`` object instead of every command's signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "yaml", "json")
"""What ``-o/--output`` accepts."""
BACKENDS = ("local", "remote")
"""``stigmer_core.config.BACKENDS``, repeated so that parsing flags imports no grpc (a test keeps them equal)."""


class EnvOption(click.Option):
    """An option whose bad value, taken from its environment variable, is said as the variable's:
    click names the flag alone, and a user who never gave it looks for it in vain."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as exc:
            from click.core import ParameterSource

            if self.name and self.envvar and ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT:
                exc.param_hint = f"'{self.opts[0]}' (env {self.envvar})"
            raise


MAX_WAIT_SECONDS = 86_400.0
"""The longest ``--timeout`` a command takes (a day)."""


def wait_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A ``--timeout``'s check: more than 0 and at most ``MAX_WAIT_SECONDS``.

    ``float`` accepts ``nan`` and ``inf``, and click's ``FloatRange`` lets
    ``nan`` through (every comparison with it is false): a ``--timeout nan``
    gave up at once, or handed grpc a deadline it refused.
    """
    if not 0 < value <= MAX_WAIT_SECONDS:  # false for nan
        raise click.BadParameter(f"must be more than 0 and at most {MAX_WAIT_SECONDS:,.0f} seconds, not {value:g}")
    return value


def seconds_within(low: float, high: float) -> Callable[[click.Context, click.Parameter, float], float]:
    """A click callback that refuses seconds outside ``low`` to ``high``, ``nan`` and ``inf`` included.

    ``float`` accepts ``nan`` and ``inf``, and click's ``FloatRange`` lets ``nan``
    through (every comparison with it is false). An ``EnvOption`` says whether the
    value came from the flag or its environment variable.
    """

    def check(ctx: click.Context, param: click.Parameter, value: float) -> float:
        if not (math.isfinite(value) and low <= value <= high):
            raise click.BadParameter(f"must be from {low:g} to {high:,.0f} seconds, not {value:g}")
        return value

    return check


class Overrides:
    """What flags said, to be laid over the environment and the config file.

    A plain class: every command builds one, ``--help`` and ``--version`` too,
    and importing attrs for it cost those a fifth of their start-up."""

    __slots__ = ("backend", "ca_file", "data_dir", "endpoint", "org", "verbose")

    def __init__(self) -> None:
        self.verbose = False
        self.org: str | None = None
        self.backend: str | None = None
        self.endpoint: str | None = None
        self.data_dir: str | None = None
        self.ca_file: str | None = None


def overrides(ctx: click.Context) -> Overrides:
    return ctx.find_root().ensure_object(Overrides)


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            flags = overrides(ctx)
            setattr(flags, name, value)
            if ctx.resilient_parsing or not flags.data_dir:
                return value
            from stigmer_core.cli.errors import CliError
            from stigmer_core.config import local_and_remote

            if flags.backend == "remote":  # a usage error
                raise CliError(local_and_remote(flags.data_dir), exit_code=2)
            if flags.endpoint and flags.backend is None:  # as much one: a server named beside a local store
                raise CliError(local_and_remote(flags.data_dir, f"--endpoint {flags.endpoint}"), exit_code=2)
        return value

    return callback


def _endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--endpoint``, refused here as a usage error when it is no HOST:PORT."""
    if value is not None and not ctx.resilient_parsing:
        from stigmer_core.config_file import endpoint_problem

        problem = endpoint_problem(value)
        if problem is not None:
            from stigmer_core.cli.errors import CliError

            raise CliError(problem, exit_code=2)
    stored: str | None = _store("endpoint")(ctx, param, value)
    return stored


def verbose_option(f: F) -> F:
    return click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, callback=_store("verbose"), help="Show details of errors."
    )(f)


def valid_org(org: str, flag: str) -> str:
    """An org name as metadata.org takes it, or a usage error before anything is read: the
    server's refusal named the list request's regex (``invalid ListAgentsRequest: org: does not
    match regex pattern …``)."""
    import re

    from stigmer_core.cli.errors import CliError

    if len(org) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", org):
        raise CliError(
            f"invalid org '{org}' for {flag}: lowercase letters, digits and inner dashes, at most 63", exit_code=2
        )
    return org


def _org(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not ctx.resilient_parsing:
        valid_org(value, "--org")
    return _store("org")(ctx, param, value)


def org_option(f: F) -> F:
    return click.option(
        "--org",
        expose_value=False,
        callback=_org,
        help="Organization (default: $STIGMER_ORG, config `org`, else 'local').",
    )(f)


def backend_options(f: F) -> F:
    f = click.option(
        "--data-dir", expose_value=False, callback=_store("data_dir"), help="Local data directory (local backend)."
    )(f)
    f = click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, resolve_path=True),
        expose_value=False,
        callback=_store("ca_file"),
        help="PEM of the CA that signed the remote server's certificate (default: $STIGMER_CA_FILE, config `ca_file`).",
    )(f)
    f = click.option(
        "--endpoint",
        expose_value=False,
        callback=_endpoint,
        metavar="HOST:PORT",
        help="The remote server (remote backend).",
    )(f)
    f = click.option(
        "--backend", type=click.Choice(BACKENDS), expose_value=False, callback=_store("backend"), help="Backend to use."
    )(f)
    return f


def common_options(f: F) -> F:
    """``--org``, the backend overrides and ``--verbose``."""
    return org_option(backend_options(verbose_option(f)))


def client_certificate_options(f: F) -> F:
    """``--cert-file`` and ``--key-file``: the client certificate a mutual-TLS server asks for."""
    f = click.option(
        "--key-file",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM of the key of --cert-file.",
    )(f)
    f = click.option(
        "--cert-file",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM client certificate, for a server that asks for one (mutual TLS); give --key-file too.",
    )(f)
    return f


def pair_of_files(cert_file: str | None, key_file: str | None) -> tuple[str | None, str | None]:
    """Both client certificate files as absolute paths (commands run from anywhere later), or a usage error."""
    from pathlib import Path

    if bool(cert_file) != bool(key_file):
        raise click.UsageError("a client certificate needs both --cert-file and --key-file")
    return (
        str(Path(cert_file).resolve()) if cert_file else None,
        str(Path(key_file).resolve()) if key_file else None,
    )
