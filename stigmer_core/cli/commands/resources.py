"""Reading, deleting and cancelling: ``get``, ``list``, ``delete``, ``cancel``, ``kinds``.

Only click and the option helpers are imported here; what talks to a backend
is imported by the command that runs, so ``stigmer --help`` stays quick.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from stigmer_core.cli import completing
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import FORMATS, common_options, overrides

if TYPE_CHECKING:
    from stigmer_core.cli.catalog import KindInfo
    from stigmer_core.cli.session import Session

output_option = click.option(
    "-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format."
)
all_orgs_option = click.option("-A", "--all-orgs", is_flag=True, help="Every org, not just --org.")
kind_argument = click.argument("kind_name", metavar="KIND", shell_complete=completing.kinds)
selector_option = click.option(
    "-l",
    "--selector",
    "--label",  # what users reach for first: click suggested --help for it
    "selectors",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only objects with this label (repeatable, or comma-separated: -l team=a,tier=1).",
)
READ_ONLY = (
    "showing the store read-only: secret values stay sealed and nothing can be written; restore the key to "
    "change anything, or export and import into a fresh data directory (docs/secrets.md, Losing the key)"
)
"""Said by ``get`` and ``list`` after the key's problem when the store is opened read-only (``Session``)."""


def _labels(selectors: tuple[str, ...]) -> dict[str, str]:
    """``-l a=1 -l b=2`` and ``-l a=1,b=2`` alike (kubectl's form): a label value holds no comma,
    so one is always a separator; ``a=1,b=2`` was taken as the value ``1,b=2`` of ``a``."""
    labels = {}
    for given in selectors:
        for selector in given.split(","):
            if not selector and given:  # "a=1," or "a=1,,b=2": nothing between the commas
                continue
            key, sep, value = selector.partition("=")
            if not sep or not key:
                part = f" (in '{given}')" if given != selector else ""
                raise CliError(f"invalid label selector '{selector}'{part}: use key=value", exit_code=2)
            labels[key] = value
    return labels


def _configured_org(session: Session, all_orgs: bool) -> str:
    """Where the org came from, when a local store shows nothing in it and no one typed it: after
    `stigmer login` the CLI acts in the token's org, on the local backend (`--data-dir`) too,
    while the local store's objects are in 'local'."""
    from stigmer_core import config

    if all_orgs or session.settings.backend != config.LOCAL or session.org == config.DEFAULT_ORG:
        return ""
    if overrides(click.get_current_context()).org is not None:
        return ""
    return " (the org comes from the config file or $STIGMER_ORG; give --org ORG, or -A for every org)"


def _show_list(
    session: Session,
    kind: KindInfo,
    output: str,
    *,
    all_orgs: bool,
    labels: dict[str, str] | None = None,
    limit: int = 0,
) -> None:
    from stigmer_core.cli import render

    org = "" if all_orgs else session.org
    found = list(session.calls(kind).iterate(org=org, labels=labels, limit=limit))
    if all_orgs:  # read in id order (creation) across orgs: shown as one org's list is, by slug
        found.sort(key=lambda o: (o.metadata.org, o.metadata.slug))  # type: ignore[attr-defined]
    if not found and output == "table":
        where = "any org" if all_orgs else f"org '{session.org}'"
        matching = f" with labels {','.join(f'{k}={v}' for k, v in labels.items())}" if labels else ""
        click.echo(f"no {kind.plural}{matching} found in {where}{_configured_org(session, all_orgs)}", err=True)
        return
    text = render.resources(kind, found, output, single=False, with_org=all_orgs)
    if text:
        click.echo(text)


@click.command()
@kind_argument
@click.argument("name", metavar="[NAME|ID]", required=False, shell_complete=completing.names)
@selector_option
@output_option
@all_orgs_option
@click.option(
    "-w", "--watch", is_flag=True, help="After the objects, print one line per change (type, name, revision) until Ctrl-C."
)
@common_options
@click.pass_context
def get(
    ctx: click.Context,
    kind_name: str,
    name: str | None,
    selectors: tuple[str, ...],
    output: str,
    all_orgs: bool,
    watch: bool,
) -> None:
    """Show one object of KIND by slug or id, or every object of KIND in the org.

    KIND is any name of a kind: singular, plural or short (`stigmer kinds`).
    With -l, only the objects with every given label (and, with --watch, their changes).
    A local store whose secret key is lost is shown read-only (said on stderr).
    """
    from stigmer_core.cli import render
    from stigmer_core.cli.session import Session

    labels = _labels(selectors)
    if labels and name is not None:
        raise CliError(f"-l selects among every {kind_name} object: give a NAME or -l, not both", exit_code=2)
    # a watch needs the daemon, which says so itself; it may start before anything is stored
    session = Session.of(ctx, read_only=READ_ONLY, needs_store="" if watch else "get")
    kind = session.kind(kind_name)
    if watch:
        from stigmer_core.cli import watching

        only = None if name is None else session.calls(kind).require(session.org, name)
        watching.watch(session, kind, output, all_orgs=all_orgs, only=only, labels=labels)
        return
    if name is None:
        _show_list(session, kind, output, all_orgs=all_orgs, labels=labels)
        return
    obj = session.calls(kind).require(session.org, name)
    click.echo(render.resources(kind, [obj], output, single=True))


@click.command("list")
@kind_argument
@selector_option
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many objects (0: all).")
@output_option
@all_orgs_option
@common_options
@click.pass_context
def list_(
    ctx: click.Context, kind_name: str, selectors: tuple[str, ...], limit: int, output: str, all_orgs: bool
) -> None:
    """List the objects of KIND in the org, optionally filtered by labels."""
    from stigmer_core.cli.session import Session

    labels = _labels(selectors)
    session = Session.of(ctx, read_only=READ_ONLY, needs_store="list")
    _show_list(session, session.kind(kind_name), output, all_orgs=all_orgs, labels=labels, limit=limit)


@click.command()
@kind_argument
@click.argument("name", metavar="NAME|ID", shell_complete=completing.names)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted (it and what it owns); delete nothing.")
@common_options
@click.pass_context
def delete(ctx: click.Context, kind_name: str, name: str, dry_run: bool) -> None:
    """Delete one object of KIND by slug or id, and everything it owns.

    Prints one line per object deleted: the one named, then what went with it
    (an agent's instances, their sessions).
    """
    from stigmer_core import errors
    from stigmer_core.cli import cascade
    from stigmer_core.cli.envelope import metadata
    from stigmer_core.cli.session import Session

    session = Session.of(ctx, needs_store="delete")
    kind = session.kind(kind_name)
    calls = session.calls(kind)
    found = calls.require(session.org, name)
    try:
        removed, counts = calls.delete_reporting(metadata(found).id, dry_run=dry_run)
    except errors.FailedPrecondition as exc:
        better = cascade.way_out(session, exc)
        if better is None:
            raise
        raise better from exc
    for line in cascade.report(session, kind, found, removed, counts, dry_run=dry_run):
        click.echo(line)


@click.command()
@kind_argument
@click.argument("name", metavar="NAME|ID", shell_complete=completing.names)
@click.option("--reason", default="", help="Recorded as the object's error (code CANCELLED).")
@common_options
@click.pass_context
def cancel(ctx: click.Context, kind_name: str, name: str, reason: str) -> None:
    """Cancel a running object of KIND (an execution) through its kind's `cancel` rpc."""
    from stigmer_core.cli.envelope import descriptor, metadata
    from stigmer_core.cli.session import Session

    session = Session.of(ctx, needs_store="cancel")
    kind = session.kind(kind_name)
    if "cancel" not in kind.methods:
        raise CliError(f"{kind.plural} cannot be cancelled: the kind has no 'cancel' rpc")
    calls = session.calls(kind)
    found = calls.require(session.org, name)
    request_cls = kind.method("cancel").request_cls
    fields = descriptor(request_cls).fields_by_name
    id_field = next((f for f in ("id", "execution_id", "value") if f in fields), None)
    if id_field is None:
        raise CliError(f"cannot tell which field of {descriptor(request_cls).full_name} names the object")
    request = calls.request("cancel", **{id_field: metadata(found).id, "reason": reason})
    cancelled = calls.call("cancel", request)
    from stigmer_core.cli import render

    state = render.status_value(kind, cancelled)
    click.echo(f"{kind.cli_name}/{metadata(found).slug} cancelled ({state})")


@click.command()
@output_option
@common_options
@click.pass_context
def kinds(ctx: click.Context, output: str) -> None:
    """List every kind served, with the names it answers to and its services."""
    from stigmer_core.cli import render
    from stigmer_core.cli.session import Session

    catalog = Session.of(ctx).catalog
    entries = [
        {
            "name": k.name,
            "names": list(k.names),
            "commandService": k.command_service,
            "queryService": k.query_service,
            "description": k.description,
        }
        for k in catalog.kinds
    ]
    if output == "json":
        click.echo(json.dumps(entries, indent=2))
    elif output == "yaml":
        from stigmer_core.cli import yamlio

        click.echo(yamlio.dump(entries, sort_keys=False).rstrip("\n"))
    else:
        rows = [
            [k.name, ",".join(k.names[1:]), k.command_service or render.NONE, k.query_service] for k in catalog.kinds
        ]
        click.echo(render.table(["KIND", "OTHER NAMES", "COMMAND SERVICE", "QUERY SERVICE"], rows))
