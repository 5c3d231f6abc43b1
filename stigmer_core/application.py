"""An assembled framework: plugins -> registry -> store -> handlers.

The daemon serves an Application over the network; ``connect("local")`` and
the testing fixtures serve the same Application through an in-process channel.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pluggy

from stigmer_core.channel import InProcessChannel
from stigmer_core.controller import build_handlers
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import Registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store.engines import open_store
from stigmer_core.store.protocol import Store


class Application:
    def __init__(
        self, registry: Registry, store: Store, pm: pluggy.PluginManager | None = None, *, data_dir: Path | None = None
    ) -> None:
        self.registry = registry
        self.store = store
        self.plugin_manager = pm
        if pm is not None:
            pm.hook.stigmer_configure(registry=registry, data_dir=data_dir)
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = build_handlers(registry, store)

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        pm: pluggy.PluginManager | None = None,
        durable: bool = True,
        default_org: str = "local",
        store: str | None = None,
        event_retention: int | None = None,
    ) -> Application:
        """Load every installed kind plugin (or ``pm``'s) over a store.

        ``store`` is a PostgreSQL URL (the team server) or None for LMDB in
        ``data_dir``. Either way ``data_dir`` holds this daemon's own files
        (lock, secret key), which is what plugins are configured with.
        """
        pm = pm or plugin_manager()
        registry = build_registry(pm, default_org=default_org)
        directory = Path(data_dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        engine = open_store(store or directory, durable=durable, event_retention=event_retention)
        try:
            return cls(registry, engine, pm, data_dir=directory)
        except BaseException:
            engine.close()
            raise

    def channel(self) -> InProcessChannel:
        return InProcessChannel.from_services(self.services)

    @property
    def service_names(self) -> list[str]:
        return sorted(self.services)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
