"""``stigmer export`` and ``stigmer import``: backups as YAML documents.

See ``stigmer_core.cli.backup`` for what an export contains and why.
"""

from __future__ import annotations

import sys
from collections import Counter

import click

from stigmer_core.cli import backup
from stigmer_core.cli.applying import apply_one
from stigmer_core.cli.documents import STDIN, in_apply_order, parse_all, read_sources
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import common_options
from stigmer_core.cli.progress import Progress
from stigmer_core.cli.reporting import report_failure
from stigmer_core.cli.session import Session


@click.command()
@click.argument("kind_names", nargs=-1, metavar="[KIND]...")
@click.option("--all", "all_kinds", is_flag=True, help="Every exported kind served.")
@click.option("-A", "--all-orgs", is_flag=True, help="Every org, not just --org.")
@common_options
@click.pass_context
def export(ctx: click.Context, kind_names: tuple[str, ...], all_kinds: bool, all_orgs: bool) -> None:
    """Write objects as YAML documents to stdout (`stigmer export --all > backup.yaml`).

    Kinds declared with exported=False (run-time records such as executions)
    are left out; naming one is an error.
    """
    if not kind_names and not all_kinds:
        raise CliError("name the kinds to export, or pass --all")
    if kind_names and all_kinds:
        raise CliError("give either --all or kinds, not both")
    session = Session.of(ctx)
    kinds = backup.exportable(session.catalog, kind_names)
    objects = backup.collect(session, kinds, org="" if all_orgs else session.org)
    text = backup.export_text(objects, session.catalog.write_order(objects))
    sys.stdout.write(text)
    sys.stdout.flush()


@click.command("import")
@click.option(
    "-f", "--filename", "files", multiple=True, metavar="PATH",
    help="File or directory to read instead of stdin (repeatable).",
)  # fmt: skip
@common_options
@click.pass_context
def import_(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Restore exported documents (`stigmer import < backup.yaml`).

    Ids and slugs are kept; importing the same documents again changes nothing.
    """
    if not files and sys.stdin.isatty():
        raise CliError("stigmer import reads documents from stdin (`stigmer import < backup.yaml`) or -f FILE")
    sources = read_sources(files or (STDIN,))
    session = Session.of(ctx)
    documents = in_apply_order(parse_all(sources, session.catalog, org=session.org), session.catalog)
    counts: Counter[str] = Counter()
    with Progress("importing", total=len(documents)) as progress:
        for document in documents:
            outcome = apply_one(session, document)
            progress.advance()
            if outcome.failed:
                counts["failed"] += 1
                report_failure(f"{document.where} ({document.ref}): {outcome.error}")
            else:
                counts[outcome.action] += 1
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    click.echo(
        f"imported {len(documents) - counts['failed']} of {len(documents)} resources ({summary or 'none given'})"
    )
    if counts["failed"]:
        ctx.exit(1)
