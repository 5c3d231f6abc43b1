"""The ``stigmer`` command group and the one place failures are reported."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from stigmer_core import errors
from stigmer_core.cli.commands import apply, backend, call, doctor, kind_new, local, resources, transfer
from stigmer_core.cli.errors import CliError, describe
from stigmer_core.cli.options import overrides, verbose_option
from stigmer_core.cli.reporting import report_failure


class StigmerGroup(click.Group):
    """Reports any failure of a subcommand as one line and a non-zero exit."""

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
            verbose = overrides(ctx).verbose
            message, details = describe(exc)
            expected = isinstance(exc, CliError | errors.StigmerError | OSError)
            report_failure(message, details, verbose=verbose, error=None if expected else exc)
            ctx.exit(exc.exit_code if isinstance(exc, CliError) else 1)


@click.group(cls=StigmerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
def main() -> None:
    """Stigmer: resource APIs for agents, workflows and their kin.

    Commands reach the backend chosen in $STIGMER_HOME/config.yaml
    (default ~/.stigmer): the local store (through the daemon when one runs)
    or a remote server. See `stigmer backend --help`.
    """
    verbose = overrides(click.get_current_context()).verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


for command in (
    local.serve,
    local.local,
    apply.apply,
    resources.get,
    resources.list_,
    resources.delete,
    resources.kinds,
    transfer.export,
    transfer.import_,
    backend.backend,
    doctor.doctor,
    kind_new.kind,
    call.call,
):
    main.add_command(command)
