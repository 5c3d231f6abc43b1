"""Finding plugins: the ``stigmer.kinds`` entry-point group and explicit ones."""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from stigmer_core import hookspecs
from stigmer_core.errors import RegistryError

ENTRY_POINT_GROUP = "stigmer.kinds"


def plugin_manager(*, entry_points: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with every installed kind plugin (and ``plugins``) loaded.

    First-party kinds are found through the same entry-point group as a
    third party's, so the path third parties rely on is exercised on every
    start. ``entry_points=False`` serves only the plugins given (tests).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        if entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            pm.register(plugin)
    except pluggy.PluginValidationError as exc:
        raise RegistryError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from exc
    except ValueError as exc:  # the same plugin object or name registered twice
        raise RegistryError(str(exc)) from exc
    check(pm)
    return pm


def check(pm: pluggy.PluginManager) -> None:
    """Refuse implementations of hooks that do not exist (typos, stale plugins)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise RegistryError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from exc
