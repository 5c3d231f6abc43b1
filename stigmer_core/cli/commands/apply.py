"""``stigmer apply``: declarative writes from YAML documents."""

from __future__ import annotations

import click

from stigmer_core.cli import completing
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import common_options, overrides


@click.command()
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, metavar="PATH", shell_complete=completing.files,
    help="YAML file, directory of them, or - for stdin (repeatable).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Check the documents and say what would happen; write nothing.")
@common_options
@click.pass_context
def apply(ctx: click.Context, files: tuple[str, ...], dry_run: bool) -> None:
    """Create or update the resources described in YAML documents.

    Documents are written in dependency order (skills and environments,
    then agents, then what refers to agents), each through its kind's
    `apply` rpc. Every document is read and checked before anything is
    written.
    """
    from stigmer_core.cli.app import with_org_hint
    from stigmer_core.cli.applying import Failed, apply_one
    from stigmer_core.cli.documents import in_apply_order, parse_all, read_sources
    from stigmer_core.cli.envelope import metadata
    from stigmer_core.cli.reporting import report_failure
    from stigmer_core.cli.session import Session

    sources = read_sources(files)
    session = Session.of(ctx)
    documents = parse_all(sources, session.catalog, org=session.org, org_given=overrides(ctx).org is not None)
    if not documents:
        raise CliError(f"no resources found in {', '.join(files)}")
    failed = 0
    created: set[str] = set()
    # a dry run creates nothing, so a reference to what another document creates cannot be looked up
    # (by slug, and by id where a document gives its own)
    planned = (
        {(d.kind.name, metadata(d.message).org or session.org, name) for d in documents for name in (d.slug, metadata(d.message).id) if name}
        if dry_run
        else set()
    )
    ordered = in_apply_order(documents, session.catalog)
    done = 0
    failed_before = Failed()
    try:
        for document in ordered:
            outcome = failed_before.explained(
                document, apply_one(session, document, dry_run=dry_run, created=created, planned=planned)
            )
            done += 1
            if outcome.failed:
                failed += 1
                failed_before.add(document, outcome)
                report_failure(
                    f"{document.where} ({document.ref}): {with_org_hint(ctx, outcome.error)}",
                    outcome.details(),
                    verbose=overrides(ctx).verbose,
                )
            else:
                click.echo(f"{document.ref} {outcome.action}")
    except KeyboardInterrupt:  # click would say "Aborted!" alone: each line above says what was applied
        raise CliError(
            f"interrupted after {done} of {len(ordered)} documents (the lines above say what each did; the one in "
            "flight may have been applied too): applying the same files again finishes the job",
            exit_code=130,
        ) from None
    if failed:
        ctx.exit(1)
