"""The ``stigmer`` command."""

from __future__ import annotations

import logging
import sys

import click

from stigmer_core import errors
from stigmer_core.server import serve as run_daemon


@click.group()
@click.option("--verbose", "-v", is_flag=True, help="Log details to stderr.")
def main(verbose: bool) -> None:
    """Stigmer: resource APIs for agents, workflows and their kin."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--address", envvar="STIGMER_ADDRESS", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--data-dir", envvar="STIGMER_DATA_DIR", default="~/.stigmer/data", show_default=True, help="LMDB data directory."
)
def serve(address: str, data_dir: str) -> None:
    """Run the daemon in the foreground (SIGTERM or Ctrl-C stops it cleanly)."""
    try:
        code = run_daemon(address, data_dir)
    except errors.StigmerError as exc:
        click.echo(f"stigmer: {exc.message}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"stigmer: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
