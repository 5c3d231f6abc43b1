"""Finding plugins: the ``stigmer.kinds`` entry-point group and explicit ones."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from types import ModuleType

import pluggy

from stigmer_core import hookspecs
from stigmer_core.errors import RegistryError
from stigmer_core.kinds.declaration import ENTRY_POINT_GROUP


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
            _load_entry_points(pm)
        for plugin in plugins:
            name = _register(pm, plugin, _name_for(pm, plugin))
            _require_hooks(pm, plugin, f"plugin {name!r}")
    except ValueError as exc:  # the same plugin object or name registered twice
        raise RegistryError(str(exc)) from exc
    check(pm)
    return pm


def _name_for(pm: pluggy.PluginManager, plugin: object) -> str:
    """A plugin given as an object is named by its module or class (pluggy's default, its
    ``id()``, names nothing a reader can find); a second one of a name gets ``#2``."""
    if isinstance(plugin, ModuleType):
        base = plugin.__name__
    else:
        cls = plugin if isinstance(plugin, type) else type(plugin)
        base = f"{cls.__module__}.{cls.__qualname__}"
    name, n = base, 1
    while pm.has_plugin(name) or pm.is_blocked(name):
        n += 1
        name = f"{base}#{n}"
    return name


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> str:
    """Register ``plugin`` as ``name``; a hookimpl pluggy refuses is named by that plugin
    (pluggy has already dropped it, so it can no longer say whose it was)."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise RegistryError(f"plugin {name!r}: {exc}") from exc
    return name


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """``load_setuptools_entrypoints``, with a failure to load one named by its entry point.

    Importing a plugin runs its author's code (building declarations, reading
    settings), so anything may go wrong there; the person reading the error
    is usually installing someone else's package, and needs to know whose.
    """
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # an import error, or whatever the module's own code raised
                raise RegistryError(
                    f"plugin {ep.name!r}: entry point {ep.name} = {ep.value} (distribution "
                    f"{dist.metadata['Name']!r}) cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            _register(pm, plugin, ep.name)
            _require_hooks(pm, plugin, f"plugin {ep.name!r}: entry point {ep.name} = {ep.value}")


def _require_hooks(pm: pluggy.PluginManager, plugin: object, where: str) -> None:
    """A plugin implementing no hook would register nothing, silently: the mistake (an entry point
    naming the package rather than its plugin module, or a declaration rather than a module)
    would only show later, as an unknown kind."""
    if not pm.get_hookcallers(plugin):
        raise RegistryError(
            f"{where} implements no hook: point it at the module or object holding the @hookimpl "
            f"functions (such as stigmer_kinds), not at {_what(plugin)}"
        )


def _what(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)
    kind = type(plugin).__name__
    return f"{kind} {name!r}" if isinstance(name, str) else f"a {kind}"


def check(pm: pluggy.PluginManager) -> None:
    """Refuse implementations of hooks that do not exist (typos, stale plugins)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise RegistryError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from exc
