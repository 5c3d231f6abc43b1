"""One command's connection: resolved settings, a client, and the kinds served.

Everything is opened on first use, so commands that fail on their arguments
never touch the store, and closed when the click context ends.

A command that only reads (export, get, list) may say so (``read_only``):
when the local store opened in this process refuses to start because its
secret key is missing or another one, because its data file is on a
read-only mount, or because a kind's plugin here is older than the release
that last reconciled the store (``ReadableOnly``), it is opened read-only instead, without
the key (secrets stay sealed, every write is refused), and the command says
once on stderr what happened. Every other command still stops with the
refusal (docs/secrets.md, Losing the key; docs/cli.md, export).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stigmer_core import config, errors
from stigmer_core.cli.catalog import Catalog, KindInfo
from stigmer_core.cli.errors import CliError, Unreachable, at_local_daemon
from stigmer_core.cli.options import overrides, valid_org
from stigmer_core.config_file import local_data

if TYPE_CHECKING:
    from stigmer_core.cli.calls import KindCalls
    from stigmer_core.client import Client
    from stigmer_core.kinds.runtime import Registry


MOUNTED = "the store is opened read-only, so nothing can be written and secret values stay sealed"
"""Said after the mount's problem when a read-only mount is why the store is opened read-only: no key is
missing, so the command's own words (about restoring the key) do not apply."""
DOWNGRADED = (
    "the store is opened read-only, so nothing can be written and secret values stay sealed; to write, "
    "upgrade the plugin to that release (docs/plugins.md, Upgrading a kind plugin on a team server)"
)
"""Said after the releases when an older plugin is why the store is opened read-only (``KindDowngrade``)."""
SERVED_OTHERWISE = (
    "the store is opened read-only, so this command writes nothing and never reconciles it to the release "
    "here; to write, use the plugin release the daemons serve, or go through a daemon (--backend remote)"
)
"""Said after the releases when a team database's daemons serve another release (``KindServedOtherwise``)."""


def for_backend(error: Unreachable, settings: config.Settings) -> Unreachable:
    """``error`` said of the local daemon when the backend is local (only a daemon is dialled there)."""
    if settings.backend != config.LOCAL or error.dialled_by_command:
        return error
    found, _ = local_data()  # where commands look without --data-dir
    flag = "" if found == settings.data_dir else f" --data-dir {settings.data_dir}"
    return at_local_daemon(error, str(settings.data_dir), flag)


class Session:
    def __init__(self, settings: config.Settings, *, read_only: str = "", needs_store: str = "") -> None:
        self.settings = settings
        self.needs_store = needs_store
        """This command's name when it works only on objects already stored (``get``, ``export``,
        ``delete``): on the local backend a data directory holding no store is refused rather
        than made into a new, empty one, and read as holding nothing."""
        self.read_only = read_only
        """What this command does when the store can only be read (said after the key's problem);
        "" for a command that must not open such a store."""
        self._client: Client | None = None
        self._catalog: Catalog | None = None

    @classmethod
    def of(cls, ctx: click.Context, *, read_only: str = "", needs_store: str = "") -> Session:
        """The session of this command invocation, built from its flags."""
        flags = overrides(ctx)
        settings = config.resolve(
            backend=flags.backend,
            endpoint=flags.endpoint,
            data_dir=flags.data_dir,
            org=flags.org,
            ca_file=flags.ca_file,
        )
        if flags.data_dir:  # a directory named on the command line, beside a store set for the shell or host
            problem = config.data_dir_behind_store(flags.data_dir, settings.store, store_flag=False)
            if problem:
                raise CliError(problem, exit_code=2)
        if flags.org is None and settings.org != config.DEFAULT_ORG:  # --org was checked as it was parsed
            source = "$STIGMER_ORG" if os.environ.get("STIGMER_ORG") else f"org in {settings.config_file}"
            valid_org(settings.org, source)
        session = cls(settings, read_only=read_only, needs_store=needs_store)
        ctx.call_on_close(session.close)
        return session

    def refuse_no_store(self) -> None:
        """A mistyped `--data-dir` (or a team server's `STIGMER_STORE` forgotten) made a new store
        there: `get` said there was nothing, `export` wrote a valid empty backup, `token list`
        listed no token to revoke again after a restore, and `doctor` then passed on it."""
        if not self.needs_store or self.settings.backend != config.LOCAL:
            return
        from stigmer_core.datadir import holder
        from stigmer_core.store.engines import is_database_url
        from stigmer_core.store.lmdb_store import DATA_FILE

        directory = Path(self.settings.data_dir)
        if is_database_url(self.settings.store) or (directory / DATA_FILE).exists() or holder(directory):
            return
        raise CliError(
            f"{directory} holds no store, so `stigmer {self.needs_store}` has nothing to work on (a store is made by "
            "the first write: `stigmer apply`, or `stigmer local start`): name the store meant with --data-dir DIR "
            "for a local one, $STIGMER_STORE or the config file's store for a team server's database, or "
            "--backend remote for a server"
        )

    @property
    def org(self) -> str:
        return self.settings.org

    @property
    def client(self) -> Client:
        if self._client is None:
            self.refuse_no_store()
            try:
                self._client = config.connect_settings(self.settings)
            except errors.ReadableOnly as exc:
                if not self.read_only:
                    raise
                self._client = config.connect_settings(self.settings, read_only=True)
                said = (
                    MOUNTED
                    if isinstance(exc, errors.ReadOnlyMount)
                    else DOWNGRADED
                    if isinstance(exc, errors.KindDowngrade)
                    else SERVED_OTHERWISE
                    if isinstance(exc, errors.KindServedOtherwise)
                    else self.read_only
                )
                click.echo(click.style("stigmer: ", fg="yellow", bold=True) + f"{exc.problem}: {said}", err=True)
        return self._client

    @property
    def target(self) -> str:
        """Where calls go, for messages: an address, or the data directory in process."""
        client = self.client
        return f"in-process store {self.settings.data_dir}" if client.in_process else client.target

    def unreachable(self, error: Unreachable) -> Unreachable:
        """``error`` as this session's backend would say it: of the local daemon, on the local backend."""
        return for_backend(error, self.settings)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.settings.backend == config.LOCAL:
                self._catalog = self._installed()
            else:
                known = self._installed(optional=True)
                self._catalog = Catalog.from_reflection(self.client.channel, self.settings.endpoint, known=known)
        return self._catalog

    def _installed(self, *, optional: bool = False) -> Catalog:
        """The kinds of the plugins installed here; for a remote backend only a source of short names."""
        from stigmer_core.kinds.registry import build_registry
        from stigmer_core.plugins import plugin_manager

        try:
            registry = build_registry(plugin_manager(), default_org=self.org)
        except Exception:
            if not optional:
                raise
            return Catalog(())
        if self.settings.backend == config.LOCAL:
            self._warn_changed_since_start(registry)
        return Catalog.from_registry(registry)

    def _warn_changed_since_start(self, registry: Registry) -> None:
        """Warn when the local daemon serves a kind as it was before its plugin changed (protos
        regenerated in an editable install, a package upgraded, without a restart): it reads this
        command's requests with its older protos, so a field it does not know yet is dropped unseen,
        and `apply` said `created` without it."""
        from stigmer_core.datadir import holder
        from stigmer_core.kinds.releases import fingerprint

        running = holder(Path(self.settings.data_dir)) or {}
        served = running.get("kinds")
        if not isinstance(served, dict):
            return  # no daemon, or one of a release that does not say
        changed = [k.name for k in registry.kinds if k.name in served and served[k.name] != fingerprint(k.decl)]
        if changed:
            click.echo(
                click.style("stigmer: ", fg="yellow", bold=True)
                + f"the daemon serving {self.settings.data_dir} (pid {running.get('pid', '?')}) started with other "
                f"definitions of {', '.join(changed)} than this command's installed plugins (changed since it "
                "started): it drops fields it does not know; restart it (`stigmer local stop`, then `stigmer local "
                "start`)",
                err=True,
            )

    def kind(self, name: str) -> KindInfo:
        return self.catalog.kind(name)

    def calls(self, kind: KindInfo) -> KindCalls:
        from stigmer_core.cli.calls import KindCalls  # grpc: loaded by the commands that call

        return KindCalls(self.client.channel, kind, target=self.target)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
