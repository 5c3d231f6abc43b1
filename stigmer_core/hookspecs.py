"""Every hook a Stigmer plugin can implement.

Hooks are named ``stigmer_*``; implement them with ``stigmer_core.hookimpl``.
A plugin module registered under the ``stigmer.kinds`` entry-point group (the
first-party kinds use the same group) is checked at startup: an implementation
whose name matches no hook here stops the server with the plugin's name.
Registration hooks return declarations; they run once, at startup, never per
request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

    from stigmer_core.kinds.declaration import KindDeclaration
    from stigmer_core.kinds.runtime import Registry
    from stigmer_core.pipeline.step import Step
    from stigmer_core.store.protocol import Store

PROJECT = "stigmer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def stigmer_kinds() -> Sequence[KindDeclaration]:
    """Declare the resource kinds this plugin serves.

    Return a sequence of ``KindDeclaration``. The registry rejects, naming
    the plugins involved, a kind name, id prefix or key prefix that another
    plugin already declared (key prefixes may not even be byte-prefixes of
    each other), and any rpc method of the kind's services that neither a
    standard operation nor one of its ``operations`` binds.
    """


@hookspec
def stigmer_pipeline_steps(kind: KindDeclaration, operation: str) -> Sequence[Step]:
    """Add cross-cutting steps to one operation of one kind.

    Called once per (kind, operation) at startup, for standard and custom
    operations alike. Return the steps to add (possibly none); each is
    placed by its ``phase`` after the framework's and the kind's steps of
    that phase. Use it for audit, metrics or authorization that applies to
    every kind without editing any of them.
    """


@hookspec
def stigmer_server_interceptors() -> Sequence[grpc.ServerInterceptor]:
    """gRPC server interceptors to install on the network server.

    They see every call on the network path only; behaviour that must hold on
    the in-process channel too belongs in a pipeline step. They are sync
    interceptors, so a daemon on LMDB that has any serves on grpc's sync server
    rather than its asyncio one (``grpc_servers``), at a cost in throughput
    with many calls in flight.
    """


@hookspec
def stigmer_configure(registry: Registry, data_dir: Path | None, store: Store, read_only: bool, transient: bool) -> None:
    """Prepare per-application state once the registry is built, before serving.

    ``data_dir`` is the store's directory (None for a store without one);
    ``store`` is the store about to be served, for state that must agree
    with what is stored (a key's fingerprint), read or written in a
    transaction of its own. ``read_only``: the application only reads (it
    was opened to export a store whose secret key is lost): ``store``
    refuses every write, so write nothing, here or in files beside it, and
    start if reading can go on. ``transient``: the application serves one command (the CLI's
    in-process commands, ``connect()`` without a daemon), not a daemon: on a store daemons share,
    their state (a key) is theirs to make. An implementation may take any subset of these
    arguments. Raise a ``StartupError`` to refuse to start. Put
    what steps need (keys, clients, caches) in ``registry.extensions`` under a
    name of the plugin's own; steps reach it as ``ctx.registry.extensions``.
    State kept here, not in module globals, keeps two applications in one
    process (tests, tools) apart.
    """
