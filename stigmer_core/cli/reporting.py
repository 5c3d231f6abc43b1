"""How failures reach the terminal: ``stigmer: <message>`` on stderr, red on a terminal only."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence

import click


def report_failure(
    message: str, details: Sequence[str] = (), *, verbose: bool = False, error: BaseException | None = None
) -> None:
    from stigmer_core.said import said_as_records, say

    if said_as_records():  # a daemon whose log is JSON: its last words are a record of it
        say(message, logging.ERROR)
        return
    click.echo(click.style("stigmer: ", fg="red", bold=True) + message, err=True)
    if not verbose:
        return
    for line in details:
        click.echo(f"  {line}", err=True)
    if error is not None:
        click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
