"""``stigmer call KIND METHOD``: any rpc of any kind, custom ones included, from YAML or flags.

The request is written in the same JSON spelling as documents (``-f
request.yaml``, or ``--set field=value`` with dotted paths; enum values by
name); its ``org``, when the request has one and none is given, is the
command's org. A response that is the kind's resource or a list of them
prints like ``get``; any other response prints as YAML or JSON.
"""

from __future__ import annotations

from pathlib import Path

import click

from stigmer_core.cli import completing
from stigmer_core.cli.options import FORMATS, common_options, wait_seconds


@click.command()
@click.argument("kind_name", metavar="KIND", shell_complete=completing.kinds)
@click.argument("method_name", metavar="METHOD", shell_complete=completing.methods)
@click.option(
    "-f", "--filename", "files", multiple=True, type=click.Path(path_type=Path, allow_dash=True),
    help="YAML (or JSON) request, field names as in documents; '-' reads stdin (repeatable, merged).",
)  # fmt: skip
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="A request field (repeatable).")
@click.option(
    "--set-file", "file_assignments", multiple=True, metavar="FIELD=PATH",
    help="A string or bytes request field read from a file: its text, or its bytes (repeatable).",
)  # fmt: skip
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--timeout", type=float, callback=wait_seconds, default=30.0, show_default=True, help="Seconds before the call gives up.")
@common_options
@click.pass_context
def call(
    ctx: click.Context,
    kind_name: str,
    method_name: str,
    files: tuple[Path, ...],
    assignments: tuple[str, ...],
    file_assignments: tuple[str, ...],
    output: str,
    timeout: float,
) -> None:
    """Call METHOD (any rpc of KIND: get, list, listByTransport, render, …) and print the answer.

    A server-streaming METHOD prints each message as it arrives, until the
    stream ends or --timeout passes.
    """
    from stigmer_core.cli import calling

    calling.run(ctx, kind_name, method_name, files, assignments, output, timeout, file_assignments)
