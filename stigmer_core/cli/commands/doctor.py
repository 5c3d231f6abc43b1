"""``stigmer doctor``: every index of every kind, and every org's usage counter, checked against
the stored objects, and repaired.

Works in this process on the store every in-process command opens: LMDB in the
data directory, which no daemon may hold (LMDB has one writer; a running
daemon would also keep serving what it read before the repair), or the team
server's database (``--store``), whose daemons may keep serving: each repair
is one write transaction, which takes the revision lock as theirs do, and
recounts from what it reads there. Opening the store already rebuilds indexes whose
declaration changed (see stigmer_core/kinds/reindex.py); doctor then reads
every object, which no request path ever does.
"""

from __future__ import annotations

from typing import Any

import click

from stigmer_core.cli.commands.local import store_option
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.operating import operated_store
from stigmer_core.cli.options import EnvOption, verbose_option


@click.command()
@click.option(
    "--data-dir", cls=EnvOption, envvar="STIGMER_DATA_DIR",
    help="LMDB data directory (env STIGMER_DATA_DIR, config local.data_dir; default $STIGMER_HOME/data).",
)  # fmt: skip
@click.option(
    "--repair", "--reindex", "repair", is_flag=True,
    help="Rewrite every index entry and org usage counter that disagrees with the stored objects.",
)  # fmt: skip
@store_option
@verbose_option
def doctor(data_dir: str | None, store: str | None, repair: bool) -> None:
    """Check (and with --repair fix) the slug, label and declared indexes of every kind,
    and the objects and bytes each org's counter says it holds (its quota is checked against them).

    Exits 1 when an index or a counter disagrees with the objects and --repair was not given.
    """
    # Imported here: `stigmer --help` imports this module and must not load the kinds.
    from stigmer_core.cli import render
    from stigmer_core.kinds import reindex, usage

    # the upgrade's step (docs/operations.md): run with the new release, it reconciles the store to it
    with operated_store("doctor", data_dir, store, creates=True, settles=True) as (app, _):
        for change in app.index_changes:
            parts = [f"rebuilt {', '.join(change.rebuilt)}"] if change.rebuilt else []
            parts += [f"removed {', '.join(change.removed)}"] if change.removed else []
            click.echo(f"{change.kind}: declaration changed; {'; '.join(parts)} ({change.objects} objects)")
        refused: list[reindex.Unwritable] = []
        problems = reindex.check(app.registry, app.store, repair=repair, refused=refused)
        counters = usage.check(app.registry, app.store, repair=repair)
        kinds = len(app.registry.kinds)
    if not problems:
        click.echo(f"every index of {kinds} kinds agrees with the stored objects")
    else:
        rows = [[p.kind, p.index, str(p.missing), str(p.stale)] for p in problems]
        click.echo(render.table(["KIND", "INDEX", "MISSING", "STALE"], rows))
    if not counters:
        click.echo("every org's usage counter agrees with the stored objects")
    else:
        rows = [[c.org, f"{c.stored[0]} / {c.stored[1]}", f"{c.counted[0]} / {c.counted[1]}"] for c in counters]
        click.echo(render.table(["ORG", "COUNTER (OBJECTS / BYTES)", "OBJECTS (OBJECTS / BYTES)"], rows))
    if refused:
        _refused(refused, render)
    if not problems and not counters:
        if refused:
            raise CliError(_refused_hint(refused))
        return
    if repair:
        click.echo(f"repaired {len(problems)} indexes and {len(counters)} org usage counters")
        if refused:
            raise CliError(_refused_hint(refused))
        return
    said = (
        f"{len(problems)} indexes and {len(counters)} org usage counters disagree with the stored objects; "
        "`stigmer doctor --repair` fixes them"
    )
    raise CliError(f"{said}. {_refused_hint(refused)}" if refused else said)


SHOWN = 20
"""Objects a write would refuse listed one per row; the rest are counted."""


def _refused(refused: list[Any], render: Any) -> None:
    """The stored objects a write refuses as they are: no repair fixes them, their owner must."""
    rows = [[u.kind, u.org, u.slug, u.object_id, u.why] for u in refused[:SHOWN]]
    click.echo(f"{len(refused)} stored objects would be refused as they are by an update or an import:")
    click.echo(render.table(["KIND", "ORG", "SLUG", "ID", "WHY"], rows))
    if len(refused) > SHOWN:
        click.echo(f"(and {len(refused) - SHOWN} more)")


def _refused_hint(refused: list[Any]) -> str:
    return (
        f"{len(refused)} stored objects hold values a write refuses; each is read, listed and deleted as it is, "
        "but its update or import is refused until the field named changes (edit it with `stigmer get -o yaml`, "
        "then `stigmer apply -f`, or in an export's file before `stigmer import`)"
    )
