"""``stigmer org list`` and ``org delete ORG``: the orgs of a store, and removing one with
everything it holds and its history, in this process.

Like ``doctor``, they work on the store every in-process command opens: LMDB
in the data directory, which no daemon may hold for a delete, or the team
server's database (``--store``), whose daemons may keep serving. See
``stigmer_core.org_removal`` for what is deleted and in which order.
"""

from __future__ import annotations

import sys
import time

import click

from stigmer_core.cli.commands.local import store_option
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.operating import operated_store
from stigmer_core.cli.options import FORMATS, EnvOption, verbose_option

data_dir_option = click.option(
    "--data-dir", cls=EnvOption, envvar="STIGMER_DATA_DIR",
    help="LMDB data directory (env STIGMER_DATA_DIR, config local.data_dir; default $STIGMER_HOME/data).",
)  # fmt: skip


@click.group()
def org() -> None:
    """Orgs of a store: an org is what its objects, tokens and events name."""


@org.command(name="list")
@data_dir_option
@store_option
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format.")
@verbose_option
def list_(data_dir: str | None, store: str | None, output: str) -> None:
    """Every org that holds objects, with what they take as its quota counts them.

    Read from the store's per-org counters (one key each, kept with every
    write), so it reads no object; on LMDB it reads beside a running daemon.
    """
    import json

    from stigmer_core.cli import render, yamlio
    from stigmer_core.kinds import usage
    from stigmer_core.limits import ENV

    with operated_store("org list", data_dir, store, reads_only=True) as (app, _), app.store.read() as txn:
        held = sorted(usage.stored(txn).items())
        limits = app.registry.limits
    rows = [{"org": o, "objects": n, "bytes": b} for o, (n, b) in held]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output == "yaml":
        click.echo(yamlio.dump(rows, sort_keys=False), nl=False)
        return
    if not held:
        click.echo("no org holds objects")
        return
    click.echo(render.table(["ORG", "OBJECTS", "BYTES"], [[o, f"{n:,}", f"{b:,}"] for o, (n, b) in held]))
    bounds = [
        f"{limit:,} {what} ({ENV[name]})"
        for name, limit, what in (
            ("max_org_objects", limits.max_org_objects, "objects"),
            ("max_org_bytes", limits.max_org_bytes, "bytes"),
        )
        if limit
    ]
    if bounds:
        click.echo(f"each org may hold at most {' and '.join(bounds)}, as this process's settings say", err=True)


@org.command("delete")
@click.argument("name", metavar="ORG")
@data_dir_option
@click.option("--dry-run", is_flag=True, help="Show what the org holds; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
@store_option
@verbose_option
def delete(name: str, data_dir: str | None, store: str | None, dry_run: bool, yes: bool) -> None:
    """Delete every object of ORG (its API tokens too), cancelling its live runs first, then
    forget its events, so that nothing of it can be read by whoever is given the name next.

    Exits 1 when an object could not be deleted (its events are then kept).
    """
    # Imported here: `stigmer --help` imports this module and must not load the kinds.
    from stigmer_core import errors
    from stigmer_core.auth.tokens import DEFAULT_CACHE_SECONDS
    from stigmer_core.cli import render
    from stigmer_core.org_removal import count, remove_org

    _check_name(name)
    with operated_store("org delete", data_dir, store, reads_only=dry_run) as (app, shared):
        holds = count(app, name)
        if dry_run or not holds:
            rows = [[kind, str(number)] for kind, number in holds.items()]
            click.echo(render.table(["KIND", "OBJECTS"], rows) if rows else f"org {name!r} holds no objects")
            if dry_run:
                return
        if not yes:  # its history alone is what whoever gets the name next must not read: asked too
            if not _interactive():
                raise CliError("org delete asks before it deletes: give --yes when stdin is not a terminal", exit_code=2)
            total = sum(holds.values())
            asked = f"delete the {total} objects of org {name!r} and its history?" if total else "forget its history?"
            click.confirm(asked, abort=True)
        try:
            removal = remove_org(app, name, tokens_settle=DEFAULT_CACHE_SECONDS if shared else 0.0, sleep=_settle)
        except errors.Unavailable as exc:  # the store went away part way: what went stays gone
            raise CliError(
                f"{exc.message}; org {name!r} is partly removed (what was deleted stays deleted, and its events are "
                f"kept): run `stigmer org delete {name}` again when the store answers to finish"
            ) from None
    for kind, number in removal.deleted.items():
        click.echo(f"{kind}: {number} deleted")
    if removal.left:
        for kind, reasons in removal.left.items():
            for reason in reasons:
                click.echo(f"{kind} {reason}", err=True)
        raise CliError(f"org {name!r} still holds {sum(map(len, removal.left.values()))} objects; its events were kept")
    click.echo(f"org {name!r} removed; {removal.forgotten} revisions of its events forgotten")


def _interactive() -> bool:
    stdin = sys.stdin
    return stdin is not None and not stdin.closed and stdin.isatty()


def _settle(seconds: float) -> None:
    click.echo(
        f"deleted the org's API tokens; waiting {seconds:g} s for the daemons serving this database to refuse them",
        err=True,
    )
    time.sleep(seconds)


def _check_name(name: str) -> None:
    """An org name no object can carry (a typo) is refused rather than found empty; and the empty
    name, which a list takes for every org."""
    if not name:
        raise CliError("no org named: give the org to delete", exit_code=2)
    from stigmer_core import errors
    from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
    from stigmer_core.pipeline.validation import check

    try:
        check(metadata_pb2.ApiResourceMetadata(name="org", org=name))
    except errors.InvalidArgument as exc:
        raise CliError(f"'{name}' is not an org name: {exc.violations[0].description}", exit_code=2) from exc
