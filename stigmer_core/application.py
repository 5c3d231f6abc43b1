"""An assembled framework: plugins -> registry -> store -> handlers.

The daemon serves an Application over the network; ``connect("local")`` and
the testing fixtures serve the same Application through an in-process channel.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import pluggy

from stigmer_core import denied_log, forks, interrupts
from stigmer_core.auth import pages, tokens
from stigmer_core.auth.identity import identity_handlers
from stigmer_core.channel import InProcessChannel
from stigmer_core.controller import Executor, build_handlers, log_refusal
from stigmer_core.datadir import secure
from stigmer_core.errors import FailedPrecondition, StartupError
from stigmer_core.kinds import reindex, releases, usage
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import Registry
from stigmer_core.pipeline import validation
from stigmer_core.pipeline.events import EventHub, StreamLimit, StreamSettings
from stigmer_core.plugins import plugin_manager, raised
from stigmer_core.read_only import ReadOnlyStore
from stigmer_core.store.engines import is_database_url, open_store
from stigmer_core.store.lmdb_store import EventRetention
from stigmer_core.store.protocol import SharedByDaemons, Store, StoreUse


class Application:
    """``require_auth``: calls that reach it over the network must carry an API
    token (in-process calls without one are the local administrator either
    way). On a store other daemons share, a token revoked or deleted through
    one of them is dropped from this one's token cache once its event
    dispatcher reads the change; ``token_cache_seconds`` bounds how long it may
    still be accepted while the event log cannot be read.

    ``read_only``: the store is served through ``ReadOnlyStore`` (every write
    is FAILED_PRECONDITION) and plugins are told so (``stigmer_configure``'s
    ``read_only``): the secrets plugin then takes the store without its key,
    so a store whose key is lost can still be read and exported, while
    nothing can be sealed under another key or written over what is sealed.

    ``transient``: the application serves one command (the CLI's in-process
    commands, ``connect()`` without a daemon) rather than being a daemon; plugins
    are told so (``stigmer_configure``'s ``transient``): on a store daemons share,
    the secrets plugin then makes no key file and runs without a key it lacks,
    since the key is the daemons'.
    """

    def __init__(
        self,
        registry: Registry,
        store: Store,
        pm: pluggy.PluginManager | None = None,
        *,
        data_dir: Path | None = None,
        streams: StreamSettings | None = None,
        require_auth: bool = False,
        token_cache_seconds: float = tokens.DEFAULT_CACHE_SECONDS,
        read_only: bool = False,
        transient: bool = False,
        settles: bool = False,
    ) -> None:
        self.registry = registry
        self._closed = False
        self._generation = forks.generation()
        """Its calls are refused in a process forked after it opened (``forks``)."""
        self._data_dir = data_dir
        shared = isinstance(store, SharedByDaemons)
        if read_only:
            store = ReadOnlyStore(store)
        self.store = store
        self.read_only = read_only
        self.plugin_manager = pm
        validation.ready()  # loaded now, so the first request does not pay for it
        registry.extensions[pages.EXTENSION] = pages.PageTokens(pages.store_key(store, read_only=read_only))
        self.authenticator = tokens.Authenticator(
            registry,
            store,
            required=require_auth,
            cache_seconds=token_cache_seconds,
            denied_log=denied_log.DeniedLog(denied_log.seconds_from_env()),  # a bad value refuses the start
            # other daemons revoke tokens too: their changes, read from the log, empty the cache
            follow=(lambda forget: self.events.on_change(tokens.KIND, forget)) if shared else None,
        )
        registry.extensions[tokens.EXTENSION] = self.authenticator
        if pm is not None:
            _configure(pm, registry=registry, data_dir=data_dir, store=store, read_only=read_only, transient=transient)
        # a command on a store daemons share reads it as they serve it, and never reconciles it to its own
        self.index_changes = _reconciled(
            registry, store, read_only=read_only, command_on_shared=transient and shared and not settles
        )
        """Indexes rebuilt at this start because a kind's declaration changed (see kinds/reindex.py)."""
        self.usage_counted = False if read_only else usage.reconcile(registry, store)
        """Whether this start counted every org's usage (a store from before the counters; kinds/usage.py)."""
        self.events = EventHub(store, streams or StreamSettings.from_env())
        """The one event dispatcher every server stream of this application reads through."""
        settings = self.events.settings
        self.stream_limit = StreamLimit(settings.max_streams, settings.max_streams_per_caller, settings.max_streams_per_org)
        self.executor = Executor(registry, store, self.authenticator, self.events)
        """Runs every kind's pipelines; the network server also reaches it directly (``queued_writes``)."""
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = build_handlers(
            registry, store, self.authenticator, self.events, self.stream_limit, self.executor
        )
        self.services.update(identity_handlers(self.authenticator, partial(log_refusal, self.authenticator)))

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        pm: pluggy.PluginManager | None = None,
        durable: bool = True,
        default_org: str = "local",
        store: str | None = None,
        streams: StreamSettings | None = None,
        retention: EventRetention | None = None,
        require_auth: bool = False,
        read_only: bool = False,
        transient: bool = False,
        sole: bool = False,
        existing: bool = False,
        settles: bool = False,
    ) -> Application:
        """Load every installed kind plugin (or ``pm``'s) over a store.

        ``store`` is a PostgreSQL URL (the team server) or None for LMDB in
        ``data_dir``. Either way ``data_dir`` holds this daemon's own files
        (lock, secret key), which is what plugins are configured with. Stream
        limits default to their settings' environment variables, and so does
        event retention on LMDB (docs/design.md: Event retention; Watch and
        streams). On PostgreSQL the schema holds the retention every daemon
        prunes by: given ``retention`` records it there (``stigmer serve``
        passes its environment's), and without one this application follows
        what is recorded, so a CLI command or ``stigmer doctor`` run with
        some shell's settings changes nothing for the daemons.
        ``read_only`` (see the class) is how a store refused with
        ``ReadableOnly`` (a lost secret key, a data file on a read-only
        mount) is opened anyway, to be read: LMDB's environment is then
        opened read-only too, so nothing in ``data_dir`` is written.
        ``transient`` (see the class): the application serves a command.
        On a database, an application that is neither holds a share of the store's use
        lock while it is open, as every daemon does; ``sole`` (a key rotation) holds it
        alone, and is refused with ``StoreInUse`` while anything holds a share
        (``store.postgres_use``). ``existing``: a database schema holding no store is refused
        (``StartupError``) rather than created. ``settles``: a command (``transient``) that
        reconciles a store daemons share to the kinds installed here, as a daemon's start does
        (``stigmer doctor``, the upgrade's step); any other command never does (``KindServedOtherwise``).
        """
        pm = pm or plugin_manager()
        registry = build_registry(pm, default_org=default_org)
        directory = Path(data_dir).expanduser()
        if retention is None and not is_database_url(store):
            retention = EventRetention.from_env_if_set()  # LMDB: every opener prunes by its own
        use = StoreUse.SOLE if sole else StoreUse.NONE if transient or read_only else StoreUse.SHARE
        engine = open_store(
            store or directory, durable=durable, retention=retention, read_only=read_only, use=use, existing=existing
        )
        try:
            app = cls(
                registry,
                engine,
                pm,
                data_dir=directory,
                streams=streams,
                require_auth=require_auth,
                read_only=read_only,
                transient=transient,
                settles=settles,
            )
        except BaseException:  # a plugin refused to start (a wrong key): the store is not left open
            engine.close()
            raise
        if not read_only:  # once it opened to write: a refused or rescue open leaves the modes as they were
            secure(directory)
        return app

    def channel(self) -> InProcessChannel:
        interrupts.note_if_default()  # a Ctrl-C during a call of it reaches the program (``interrupts``)
        return InProcessChannel.from_services(self.services, self._serving)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def forked(self) -> bool:
        """Whether this process was forked from the one that opened it (``forks``)."""
        return self._generation != forks.generation()

    def _serving(self) -> bool:
        if self._generation != forks.generation():  # a forked child: the store is its parent's
            raise ValueError(forks.forked_message(str(self._data_dir or "the data directory"), None))
        return not self._closed

    @property
    def service_names(self) -> list[str]:
        return sorted(self.services)

    def close(self) -> None:
        self._closed = True  # its channels' calls are refused from now, as a closed grpc channel's are
        self.events.close()
        self.store.close()

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reconciled(
    registry: Registry, store: Store, *, read_only: bool, command_on_shared: bool = False
) -> list[reindex.Change]:
    """The indexes brought in line with the kinds' declarations; read-only, only if they already are."""
    try:
        return reindex.reconcile(
            registry,
            store,
            downgrade=releases.downgrades_allowed(),
            writes=not read_only,
            settles=not command_on_shared,
        )
    except FailedPrecondition:
        if not read_only:
            raise
        if command_on_shared:
            raise StartupError(
                "a kind's declaration here has indexes the store's daemons do not keep (another release or build of "
                "its plugin serves the store), so this command cannot read it as declared: run it with the plugin "
                "release the daemons serve, or through a daemon (`--backend remote`)"
            ) from None
        raise StartupError(
            "the store's indexes must first be brought in line with the installed kinds (a kind's declaration "
            "changed since the store was written), which writes, and the store is opened read-only: open it once "
            "to write (with its secret key, on a writable disk), or install the plugin versions that wrote it"
        ) from None


def _configure(pm: pluggy.PluginManager, **arguments: object) -> None:
    """Call every ``stigmer_configure`` as pluggy would (last registered first, each with the
    arguments it takes), one at a time, so that what one raises names its plugin: a
    ``StartupError`` is the plugin's own message; anything else is a bug of that plugin, a
    ``BaseException`` too (``sys.exit("...")`` in a plugin would otherwise end the process with
    its text alone, or none, and no word of whose it was; nothing here is a generator, so even a
    ``GeneratorExit`` is the plugin's own)."""
    impls = pm.hook.stigmer_configure.get_hookimpls()
    if any(impl.wrapper or impl.hookwrapper for impl in impls):  # around-logic needs pluggy's own call
        try:
            pm.hook.stigmer_configure(**arguments)
        except StartupError:
            raise
        except BaseException as exc:
            named = ", ".join(repr(impl.plugin_name) for impl in impls)
            raise StartupError(
                f"stigmer_configure (implemented by plugins {named}, one a hook wrapper) raised {raised(exc)}"
            ) from exc
        return
    for impl in reversed(impls):
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except StartupError:
            raise
        except BaseException as exc:
            raise StartupError(f"plugin {impl.plugin_name!r}: stigmer_configure raised {raised(exc)}") from exc
