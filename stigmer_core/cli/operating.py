"""The store an operator's command works on in its own process (``doctor``, ``org delete``).

LMDB in the data directory, which no daemon may hold (LMDB has one writer, and a
running daemon would keep serving what it read before the command), or a team
server's database (``--store``), whose daemons may keep serving: each of the
commands' writes is one transaction, taking the revision lock theirs take.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stigmer_core.cli.errors import CliError

if TYPE_CHECKING:  # `stigmer --help` imports the commands: the kinds load when one runs
    from stigmer_core.application import Application


@contextlib.contextmanager
def operated_store(
    command: str,
    data_dir: str | None,
    store: str | None,
    *,
    reads_only: bool = False,
    creates: bool = False,
    settles: bool = False,
) -> Iterator[tuple[Application, bool]]:
    """The application on the store named by the flags, environment or config, and whether it is
    a database daemons may be serving; refused when a daemon holds the LMDB data directory, and
    when the data directory holds no store (``command`` names the command in the refusal).
    ``reads_only``: the command writes nothing (a dry run), so a daemon holding the LMDB data
    directory is no obstacle: the store is opened read-only beside it, as LMDB lets any number
    of readers in other processes do, and the data directory's lock is left to the daemon.
    ``creates``: a database schema holding no store is created (``doctor``, which docs/operations.md
    has create a deployment's), not refused as a misspelt one is. ``settles``: a database is
    reconciled to the kinds installed here, as a daemon's start does (``doctor``, run with a new
    release as the upgrade's step)."""
    from stigmer_core import config
    from stigmer_core.application import Application
    from stigmer_core.datadir import DataDirLock, holder
    from stigmer_core.store.engines import is_database_url
    from stigmer_core.store.lmdb_store import DATA_FILE

    settings = config.resolve(backend=config.LOCAL, data_dir=data_dir, store=store)
    if given_on_command_line("data_dir") and not given_on_command_line("store"):
        problem = config.data_dir_behind_store(settings.data_dir, settings.store, store_flag=True)
        if problem:
            raise CliError(problem, exit_code=2)
    directory = Path(settings.data_dir)
    shared = is_database_url(settings.store)
    if not shared and not (directory / DATA_FILE).exists():
        raise CliError(_no_store(command, directory))
    if not shared:
        _say_not_remote(command, directory)
    running = None if shared else holder(directory)
    if running and reads_only:
        with Application.open(directory, read_only=True, transient=True) as app:
            yield app, shared
        return
    if running:
        who = f" (pid {running['pid']})" if "pid" in running else ""
        raise CliError(f"a stigmer daemon{who} holds {directory}; stop it first (`stigmer local stop`)")
    lock = DataDirLock(directory)
    if not shared:
        lock.acquire()
    try:
        with Application.open(
            directory, store=settings.store or None, transient=True, existing=not creates, settles=settles
        ) as app:
            yield app, shared
    finally:
        if not shared:
            lock.release()


def given_on_command_line(parameter: str) -> bool:
    """Whether this command's ``parameter`` was typed on its command line, rather than taken from
    its environment variable or left out."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(parameter) is ParameterSource.COMMANDLINE


def _say_not_remote(command: str, directory: Path) -> None:
    """A note, when the CLI's backend is a remote server, that ``command`` works on the local
    store: after `stigmer login`, `org delete acme --dry-run` said the org held no objects while
    the team's held dozens, and a user could take the team org for empty."""
    from stigmer_core import config

    chosen = config.resolve()
    if chosen.backend == config.REMOTE:
        click.echo(
            f"note: `stigmer {command}` works on the local store in {directory}, in this process; the CLI's "
            f"backend, the remote server {chosen.endpoint}, is not used (for a team server's store, name its "
            "database: --store postgresql://..., $STIGMER_STORE or the config file's store)",
            err=True,
        )


def _no_store(command: str, directory: Path) -> str:
    """Why ``command`` does nothing on a data directory without a store: checked on a new, empty
    one, it said every index agreed and an org held nothing, while the store meant (a team
    server's, whose CLI backend is the remote server) was never looked at."""
    from stigmer_core import config

    chosen = config.resolve()
    told = (
        f"; the CLI's backend here is the remote server {chosen.endpoint}, which `stigmer {command}` does not go "
        "through"
        if chosen.backend == config.REMOTE
        else ""
    )
    return (
        f"{directory} holds no store, so `stigmer {command}` has nothing to work on{told}: it works on a store in "
        "this process, so run it where the store is, naming it: --data-dir DIR for a local store, --store "
        "postgresql://... (or $STIGMER_STORE, or the config file's store) for a team server's database"
    )
