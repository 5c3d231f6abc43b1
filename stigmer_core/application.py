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
from stigmer_core.kinds import reindex
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import Registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store.lmdb_store import LmdbStore
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
        self.index_changes = reindex.reconcile(registry, store)
        """Indexes rebuilt at this start because a kind's declaration changed (see kinds/reindex.py)."""
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = build_handlers(registry, store)

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        pm: pluggy.PluginManager | None = None,
        durable: bool = True,
        default_org: str = "local",
    ) -> Application:
        """Load every installed kind plugin (or ``pm``'s) over an LMDB store in ``data_dir``."""
        pm = pm or plugin_manager()
        registry = build_registry(pm, default_org=default_org)
        store = LmdbStore(data_dir, durable=durable)
        try:
            return cls(registry, store, pm, data_dir=store.path)
        except BaseException:
            store.close()  # a refused start (say, a kind whose stored objects it would hide) leaves nothing open
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
