"""``stigmer secrets rotate-key``: re-seal every secret at rest under a new key.

It works in this process on the store every in-process command opens (LMDB
in the data directory, or the team server's database that ``--store``,
``$STIGMER_STORE`` or the config file's ``store`` names), with no daemon
running (it takes the data directory's lock, so this machine's daemon cannot
start meanwhile): a key rotation is a maintenance operation, and doing it
offline means no request can see a value sealed under one key while the
store already names the other. A store that does not record the key at hand
as its secrets' key is refused before anything is written, so the key file
is only ever replaced once the store it seals was re-sealed. What happens,
and why each step is where it is, is in ``stigmer_plugins.secrets``
(``Secrets.rotate``) and docs/secrets.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from stigmer_core.cli.commands.local import data_dir_option, store_option
from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import verbose_option
from stigmer_core.cli.words import counted


@click.group()
def secrets() -> None:
    """The key that seals secrets at rest (environment values, MCP headers, runs)."""


@secrets.command("rotate-key")
@data_dir_option
@store_option
@click.option(
    "--new-key-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
    help="Write the new key here (it must not exist) instead of replacing the current key file; "
    "required when the key comes from $STIGMER_SECRET_KEY.",
)  # fmt: skip
@verbose_option
def rotate_key(data_dir: str | None, store: str | None, new_key_file: Path | None) -> None:
    """Re-seal every secret under a new key, in one transaction.

    Stop the daemon first (on a team server: every daemon of the database).
    The new key replaces the key file in use (the data directory's
    secret.key, or $STIGMER_SECRET_KEY_FILE), and the old one is
    overwritten, so copies of values it sealed can no longer be opened;
    with --new-key-file the new key is written there and the current key
    file is left for you to retire. Every other daemon of a team server
    needs the new key before it starts again.
    """
    # Imported here, not at the top: `stigmer --help` loads this module and must not load the kinds.
    from stigmer_core import config, errors
    from stigmer_core.application import Application
    from stigmer_core.datadir import DataDirBusy, DataDirLock
    from stigmer_core.store.engines import describe, is_database_url
    from stigmer_core.store.lmdb_store import DATA_FILE
    from stigmer_plugins import secrets as sealing

    settings = config.resolve(data_dir=data_dir, store=store)
    directory = settings.data_dir
    if not settings.store and not (directory / DATA_FILE).exists():
        raise CliError(
            f"{directory} holds no store, so there is no secret to re-seal and the key is left as it is; a team "
            "server's key is rotated on its database: give --store postgresql://... (or $STIGMER_STORE, or the "
            "config file's store)"
        )
    if new_key_file is not None and new_key_file.exists():
        raise CliError(f"{new_key_file} already exists; give a path for the new key that does not")
    lock = DataDirLock(directory)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        raise CliError(
            f"{exc.message}; stop it first (`stigmer local stop`, or as it was started: systemd, a container): "
            "keys are rotated offline"
        ) from None
    try:
        try:  # on a database, refused while any daemon holds it (store.postgres_use)
            app = Application.open(directory, store=settings.store or None, sole=True)
        except errors.StoreInUse as exc:
            raise CliError(exc.message) from None
        with app:
            keyring = sealing.secrets(app.registry)
            source = keyring.source
            if new_key_file is None and source.path is None:
                raise CliError(
                    f"the key comes from ${sealing.KEY_ENV}: give --new-key-file PATH for the new key, then set "
                    f"${sealing.KEY_FILE_ENV} to that path (or ${sealing.KEY_ENV} to its base64) before starting"
                )
            key = sealing.new_key()
            written: list[Path] = []
            if new_key_file is not None:
                target = new_key_file

                def stage(new: bytes) -> None:
                    sealing.write_key_file(target, new)
                    written.append(target)

            else:
                staged = source.staged
                assert staged is not None

                def stage(new: bytes) -> None:
                    sealing.write_key_file(staged, new, replace=True)
                    written.append(staged)

            try:
                done = keyring.rotate(app.store, app.registry, key, stage)  # refuses a store this key does not seal
            except errors.FailedPrecondition:
                # refused in the rotating transaction (another rotation won a race): nothing committed,
                # so the key staged for it is no key of the store's; any other failure keeps it (it may
                # have committed), and the next start settles which key the store records
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            if new_key_file is None:
                sealing.install_staged(source)
    finally:
        lock.release()
    where = f" in {describe(settings.store or directory)}"
    run_keys = counted(done.run_keys, "live run's key", "live runs' keys")
    click.echo(
        f"re-sealed the secrets of {counted(done.objects, 'object')} and {run_keys}{where}: "
        f"key {done.old} -> {done.new}"
    )
    if new_key_file is not None:
        click.echo(
            f"the new key is in {new_key_file}; set ${sealing.KEY_FILE_ENV} to it before starting the daemon, "
            "and destroy the old key"
        )
    else:
        click.echo(f"the new key replaced {source.where}")
    if is_database_url(settings.store):
        click.echo(
            "every other daemon of this database still holds the old key, and refuses to start with it: copy the new "
            f"key to each one's key file (or ${sealing.KEY_FILE_ENV}) before starting it"
        )
