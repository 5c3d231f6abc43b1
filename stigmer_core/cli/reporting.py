"""How failures reach the terminal: ``stigmer: <message>`` on stderr, red on a terminal only."""

from __future__ import annotations

import traceback
from collections.abc import Sequence

import click


def report_failure(
    message: str, details: Sequence[str] = (), *, verbose: bool = False, error: BaseException | None = None
) -> None:
    click.echo(click.style("stigmer: ", fg="red", bold=True) + message, err=True)
    if not verbose:
        return
    for line in details:
        click.echo(f"  {line}", err=True)
    if error is not None:
        click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
