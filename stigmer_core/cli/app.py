"""The ``stigmer`` command group and the one place failures are reported.

Commands are registered by import path and loaded when used, so
``stigmer --version`` or ``stigmer get`` pays only for the modules it runs;
grpc, protobuf and the kinds are imported by the commands that need them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from stigmer_core import __version__
from stigmer_core.cli.errors import CliError, Unreachable, describe
from stigmer_core.cli.options import overrides, verbose_option

# Command name -> "module:attribute", one line per command or command group. A command imports grpc,
# protobuf and the kinds inside its functions, not at the top, so `stigmer get --help` stays light
# (tests/cli/test_first_hour.py checks that such help loads neither grpc nor protovalidate).
COMMANDS: dict[str, str] = {
    "serve": "stigmer_core.cli.commands.local:serve",
    "local": "stigmer_core.cli.commands.local:local",
    "apply": "stigmer_core.cli.commands.apply:apply",
    "get": "stigmer_core.cli.commands.resources:get",
    "list": "stigmer_core.cli.commands.resources:list_",
    "delete": "stigmer_core.cli.commands.resources:delete",
    "cancel": "stigmer_core.cli.commands.resources:cancel",
    "kinds": "stigmer_core.cli.commands.resources:kinds",
    "export": "stigmer_core.cli.commands.transfer:export",
    "import": "stigmer_core.cli.commands.transfer:import_",
    "backend": "stigmer_core.cli.commands.backend:backend",
    "completion": "stigmer_core.cli.commands.completion:completion",
    "secrets": "stigmer_core.cli.commands.secrets:secrets",
    "token": "stigmer_core.cli.commands.token:token",
    "login": "stigmer_core.cli.commands.login:login",
    "whoami": "stigmer_core.cli.commands.login:whoami",
    "doctor": "stigmer_core.cli.commands.doctor:doctor",
    "org": "stigmer_core.cli.commands.org:org",
    "kind": "stigmer_core.cli.commands.kind_new:kind",
    "call": "stigmer_core.cli.commands.call:call",
}


# What `stigmer --help` lists for each command: its help's first sentence, as click takes it from
# the command, which `--help` would otherwise import every module above to read (a quarter of its
# start-up). tests/cli/test_first_hour.py checks that the listing is the one the commands make.
SUMMARIES: dict[str, str] = {
    "serve": "Run the daemon in the foreground (SIGTERM or Ctrl-C stops it cleanly).",
    "local": "Run the local daemon in the background.",
    "apply": "Create or update the resources described in YAML documents.",
    "get": "Show one object of KIND by slug or id, or every object of KIND in the org.",
    "list": "List the objects of KIND in the org, optionally filtered by labels.",
    "delete": "Delete one object of KIND by slug or id, and everything it owns.",
    "cancel": "Cancel a running object of KIND (an execution) through its kind's `cancel` rpc.",
    "kinds": "List every kind served, with the names it answers to and its services.",
    "export": "Write objects as YAML documents to stdout (`stigmer export --all > backup.yaml`).",
    "import": "Restore exported documents (`stigmer import < backup.yaml`).",
    "backend": "Show or change the backend: the local store, or a remote server.",
    "completion": "Print the completion script for SHELL (commands, flags, kinds and names).",
    "secrets": "The key that seals secrets at rest (environment values, MCP headers, runs).",
    "token": "Create, list and revoke API tokens (each acts in one org with one role).",
    "login": "Check a token against a server, then make that server the backend (config file, mode 0600).",
    "whoami": "Who the backend takes you for: the principal, its orgs and roles.",
    "doctor": "Check (and with --repair fix) the slug, label and declared indexes of every kind, and the "
    "objects and bytes each org's counter says it holds (its quota is checked against them).",
    "org": "Orgs of a store: an org is what its objects, tokens and events name.",
    "kind": "Write new kinds.",
    "call": "Call METHOD (any rpc of KIND: get, list, listByTransport, render, …) and print the answer.",
}


class StigmerGroup(click.Group):
    """Loads commands on first use and reports any failure of one as one line and a non-zero exit."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing click makes, with each command not loaded yet read from ``SUMMARIES``."""
        shown: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            summary = SUMMARIES.get(name) if name not in self.commands else None
            command = click.Command(name, help=summary) if summary is not None else self.get_command(ctx, name)
            if command is not None and not command.hidden:
                shown.append((name, command))
        if shown:
            limit = formatter.width - 6 - max(len(name) for name, _ in shown)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in shown])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, attribute = where.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        self.commands[cmd_name] = command
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, with the command a mistyped one likely meant (`gett`: did you mean 'get'?)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1) if args else []
            if not close or "No such command" not in exc.message:
                raise
            raise click.UsageError(f"{exc.message.rstrip('.')} (did you mean '{close[0]}'?).", ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # Output piped into something that stopped reading (`| head`): not worth a message.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except Exception as exc:
            from stigmer_core import errors
            from stigmer_core.cli.reporting import report_failure

            verbose = overrides(ctx).verbose
            if isinstance(exc, Unreachable):
                exc = _said_of_backend(ctx, exc)
            message, details = describe(exc)
            if isinstance(exc, errors.NotFound):
                message = with_org_hint(ctx, message)
            elif isinstance(exc, errors.Unauthenticated) and exc.reason == "TOKEN_REQUIRED":
                message = with_withheld_token_hint(ctx, message)
            elif isinstance(exc, errors.Unauthenticated) and exc.reason in REFUSED_TOKEN_REASONS:
                message = with_token_source(ctx, message)
            expected = isinstance(exc, CliError | errors.StigmerError | OSError)
            report_failure(message, details, verbose=verbose, error=None if expected else exc)
            ctx.exit(exc.exit_code if isinstance(exc, CliError) else 1)


def _said_of_backend(ctx: click.Context, error: Unreachable) -> Unreachable:
    """A server gone away, said of the local daemon when that is what the command dialled."""
    from stigmer_core import config
    from stigmer_core.cli.session import for_backend

    flags = overrides(ctx)
    try:
        settings = config.resolve(backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir)
    except Exception:  # only a better wording: the message stands without it
        return error
    return for_backend(error, settings)


def with_withheld_token_hint(ctx: click.Context, message: str) -> str:
    """A server asking for a token, when the config file holds one saved for another endpoint
    (which is never sent elsewhere, ``config.resolve``): say so, or it reads as if no login was made."""
    from stigmer_core import config
    from stigmer_core.config_file import section

    flags = overrides(ctx)
    try:
        settings = config.resolve(backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir)
        remote = section(config.load_config(settings.config_file), "remote")
    except Exception:  # only a hint: the message stands without it
        return message
    saved = str(remote.get("endpoint") or "")
    if settings.backend != config.REMOTE or settings.token or not remote.get("token") or saved == settings.endpoint:
        return message
    return (
        f"{message}; the config file's token was saved for {saved} and is not sent to {settings.endpoint}: "
        f"give $STIGMER_TOKEN, or `stigmer login --endpoint {settings.endpoint}`"
    )


REFUSED_TOKEN_REASONS = frozenset({"TOKEN_INVALID", "TOKEN_EXPIRED", "TOKEN_REVOKED", "TOKEN_MALFORMED"})
"""A token sent and refused: the message names the token's fault, not where it came from."""


def with_token_source(ctx: click.Context, message: str) -> str:
    """A refused token, said with where it came from and how to replace it: ``the API token is
    not valid`` alone left a user whose $STIGMER_TOKEN overrode a fresh login guessing."""
    import os

    from stigmer_core import config

    flags = overrides(ctx)
    try:
        settings = config.resolve(backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir)
    except Exception:  # only a hint: the message stands without it
        return message
    if settings.backend != config.REMOTE:
        return message
    if os.environ.get(config.ENV["token"]):
        saved = (config.load_config(settings.config_file).get("remote") or {}).get("token")
        source = f"the token in ${config.ENV['token']}" + (", which overrides the config file's" if saved else "")
        fix = f"set ${config.ENV['token']} to a valid token" + (
            ", or unset it to use the one `stigmer login` saved" if saved else ""
        )
    else:
        source = f"the token saved in {settings.config_file} for {settings.endpoint}"
        fix = "`stigmer login` with a valid one (`stigmer token create` makes one)"
    return f"{message} ({source}): {fix}"


def with_org_hint(ctx: click.Context, message: str) -> str:
    """A remote server that knows no org of the config's (a token switched in without `login`,
    which sets the org) says only "org 'local' not found": say where the org came from. Only of
    the configured org: one a document names was not taken from the config."""
    from stigmer_core import config

    flags = overrides(ctx)
    if flags.org is not None or not message.startswith("org '") or not message.endswith("' not found"):
        return message
    try:
        settings = config.resolve(backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir)
    except Exception:  # only a hint: the message stands without it
        return message
    if settings.backend != config.REMOTE or message != f"org '{settings.org}' not found":
        return message
    return (
        f"{message} on {settings.endpoint} (the org comes from the config file or $STIGMER_ORG; give --org ORG, "
        "or `stigmer login` to take the token's org)"
    )


@click.group(cls=StigmerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.version_option(version=__version__, prog_name="stigmer", message="%(prog)s %(version)s")
def main() -> None:
    """Stigmer: resource APIs for agents, workflows and their kin.

    Commands reach the backend chosen in $STIGMER_HOME/config.yaml
    (default ~/.stigmer): the local store (through the daemon when one runs)
    or a remote server. See `stigmer backend --help`.
    """
    verbose = overrides(click.get_current_context()).verbose
    from stigmer_core import interrupts

    interrupts.install()  # a Ctrl-C in a step of a store served in process stops the command
    # grpc's core writes its own log lines (a failed TLS handshake, a bad CA file) to stderr, around
    # the one line a command fails with; set before anything imports grpc. The user's setting wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import logging  # here, not at the top: `stigmer --help` and `--version` never log

    from stigmer_core.cli.log_format import HANDLER, LINE, OneLine, not_chatty

    handler = logging.StreamHandler()
    handler.name = HANDLER
    handler.setFormatter(logging.Formatter(LINE) if verbose else OneLine(LINE))
    handler.addFilter(not_chatty)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
