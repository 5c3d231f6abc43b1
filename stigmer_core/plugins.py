"""Finding plugins: the ``stigmer.kinds`` entry-point group and explicit ones."""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import reprlib
import traceback
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

import attr
import attrs
import pluggy

from stigmer_core import hookspecs
from stigmer_core.distributions import identity
from stigmer_core.errors import RegistryError
from stigmer_core.kinds import declaration
from stigmer_core.kinds.declaration import ENTRY_POINT_GROUP

if TYPE_CHECKING:  # only a server reads interceptors: `stigmer kinds` starts 0.08 s sooner without grpc
    import grpc


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
    That includes a ``BaseException`` (``sys.exit`` in a module's top level,
    an ``Abort(BaseException)`` of its own, a ``KeyboardInterrupt``), which
    would otherwise end the process with no word of which plugin it was.

    Every entry point's name is its plugin's name, so the names are settled
    before anything is imported: a name two distributions use would leave one
    of them unloaded (pluggy registers one plugin per name), so it stops
    startup naming both (`_entry_points`).
    """
    loaded: dict[str, tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]] = {}
    for ep, dist in _entry_points():
        try:
            plugin = ep.load()
        except BaseException as exc:  # an import error, or whatever the module's own code raised
            raise RegistryError(
                f"plugin {ep.name!r}: entry point {ep.name} = {ep.value} (distribution "
                f"{identity(dist)[0]!r}) cannot be loaded: {raised(exc)}"
            ) from exc
        first = pm.get_name(plugin)
        if first is not None and first in loaded:  # pluggy's ValueError would name neither distribution
            one, two = sorted([_describe(*loaded[first]), _describe(ep, dist)])
            named = " and ".join(map(repr, sorted([first, ep.name])))  # in a fixed order, whatever sys.path's
            raise RegistryError(
                f"plugins {named} are one object, named by two {ENTRY_POINT_GROUP} entry points: "
                f"{one} and {two}; a plugin is loaded once, under one name: remove one of the entry points, "
                "or uninstall one of the distributions"
            )
        loaded[ep.name] = (ep, dist)
        _register(pm, plugin, ep.name)
        _require_hooks(pm, plugin, f"plugin {ep.name!r}: entry point {ep.name} = {ep.value}")


def _entry_points() -> list[tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]]:
    """The ``stigmer.kinds`` entry points to load, one per name, in the order found.

    ``importlib.metadata.distributions()`` lists a distribution once per place
    it is found on ``sys.path``: a directory listed twice gives the very same
    ``.dist-info`` twice, and an editable install beside an installed copy
    gives two. Python imports the first of those copies, and
    ``importlib.metadata.entry_points()`` keeps the first too, so a later copy
    of the same distribution (by its normalized name) whose entry point names
    the same object is the same plugin, and is skipped. Anything else sharing
    a name, another distribution's entry point or a copy naming another
    object, is a clash: which one would load depends on ``sys.path`` order,
    and the other would vanish with nothing said (a third party's
    ``apitoken`` took the built-in ApiToken kind away), so it is refused,
    naming both and where they are installed.
    """
    found: dict[str, tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            if ep.name not in found:
                found[ep.name] = (ep, dist)
                continue
            first_ep, first_dist = found[ep.name]
            if _dist_name(first_dist) == _dist_name(dist) and first_ep.value == ep.value:
                continue  # the same distribution found again further along sys.path
            one, two = sorted([_describe(first_ep, first_dist), _describe(ep, dist)])
            raise RegistryError(
                f"plugin name {ep.name!r} is the name of two {ENTRY_POINT_GROUP} entry points: {one} and {two}; "
                "only one plugin can have a name, so the other would not be loaded: rename one of the entry "
                "points, or uninstall one of the distributions"
            )
    return list(found.values())


def _dist_name(dist: importlib.metadata.Distribution) -> str:
    from packaging.utils import canonicalize_name  # only a clash of names needs it: start-up stays without packaging

    return canonicalize_name(identity(dist)[0])


def _describe(ep: importlib.metadata.EntryPoint, dist: importlib.metadata.Distribution) -> str:
    """An entry point as a person fixing the clash needs it: distribution, version, value, where."""
    try:
        where = f", in {dist.locate_file('')}"
    except NotImplementedError:  # a Distribution that is not on a path (a custom finder's)
        where = ""
    name, version = identity(dist)
    return f"distribution {name!r} {version} ({ep.name} = {ep.value}{where})"


def raised(exc: BaseException) -> str:
    """What a plugin raised, for a start-up error: its type, its text when it has one, and the
    plugin's line it came from (a declaration refused as it is built, ``IndexSpec("x", None)``,
    is refused before its kind exists, so the line is what tells which kind's it is)."""
    text = str(exc)
    shown = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = _plugin_line(exc)
    if where:
        shown += f" (at {where})"
    if isinstance(exc, KeyboardInterrupt):
        shown += " (an interrupt: Ctrl-C while it ran, or the plugin's own raise)"
    return shown


_NOT_THE_PLUGIN = tuple(
    os.path.dirname(module.__file__ or "") + os.sep for module in (hookspecs, attrs, attr, pluggy)
)


def _plugin_line(exc: BaseException) -> str:
    """For a declaration refused as it was built: ``file:line`` of the innermost frame of
    ``exc`` in neither this package, attrs nor pluggy (the plugin's). What a plugin raises
    itself names no line: its own traceback is the error's cause."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames or frames[-1][0].f_code.co_filename != declaration.__file__:
        return ""
    found = ""
    for frame, line in frames:
        name = frame.f_code.co_filename
        if not name.startswith(_NOT_THE_PLUGIN) and not name.startswith("<"):
            found = f"{name}:{line}"
    return found


def hook_results(
    pm: pluggy.PluginManager, hook: str, arguments: Mapping[str, object] | None = None, *, about: str = ""
) -> list[tuple[str, object]]:
    """Call every implementation of ``hook`` as pluggy would (last registered first, each with
    the arguments it takes, a ``None`` result left out), one at a time, so that what one raises,
    or a wrong value it returns, names its plugin: pluggy's own call reports neither whose it
    was. Anything raised (``SystemExit`` and other ``BaseException`` included: none of this is a
    generator, so even a ``GeneratorExit`` comes from the plugin's code) is a ``RegistryError``
    naming the plugin, the hook and what was raised.

    With a hook wrapper among them, its around-logic needs pluggy's own call; results are then
    named by the plugins that implement the hook, together. ``about`` says what the call was
    for (``for kind 'Prompt', operation 'create'``), in the error.
    """
    arguments = arguments or {}
    caller = getattr(pm.hook, hook)
    impls = caller.get_hookimpls()
    where = f"{hook} {about}" if about else hook
    if any(impl.wrapper or impl.hookwrapper for impl in impls):
        names = " or ".join(impl.plugin_name for impl in impls if not (impl.wrapper or impl.hookwrapper))
        try:
            results = caller(**arguments)
        except BaseException as exc:
            raise RegistryError(f"{where}, called through a hook wrapper, raised {raised(exc)}") from exc
        return [(f"{names} (through a hook wrapper)", result) for result in results]
    found: list[tuple[str, object]] = []
    for impl in reversed(impls):
        try:
            result = impl.function(*(arguments[name] for name in impl.argnames))
        except BaseException as exc:
            raise RegistryError(f"plugin {impl.plugin_name!r}: {where} raised {raised(exc)}") from exc
        if result is not None:
            found.append((impl.plugin_name, result))
    return found


def server_interceptors(pm: pluggy.PluginManager) -> list[grpc.ServerInterceptor]:
    """Every plugin's ``stigmer_server_interceptors``, checked, in pluggy's order.

    grpc takes any object as an interceptor and fails only when a call comes: the daemon
    would start and answer every call "Error in service handler!". So each item must be a
    ``grpc.ServerInterceptor`` (a ``grpc.aio`` one is not: these run on grpc's sync server),
    and a hook returning one interceptor, not a list of them, is refused; either names the
    plugin. A hook that raises names it too (``hook_results``).
    """
    import grpc

    interceptors: list[grpc.ServerInterceptor] = []
    expected = "it must return a list of grpc.ServerInterceptor (an empty list for none)"
    for plugin, returned in hook_results(pm, "stigmer_server_interceptors"):
        where = f"plugin {plugin!r}: stigmer_server_interceptors returned"
        if isinstance(returned, grpc.ServerInterceptor):
            raise RegistryError(f"{where} one {type(returned).__name__}, not a list; {expected}")
        if isinstance(returned, (str, bytes, dict)) or not isinstance(returned, Iterable):
            raise RegistryError(f"{where} a {type(returned).__name__}; {expected}")
        for item in listed(plugin, "stigmer_server_interceptors", returned):
            if not isinstance(item, grpc.ServerInterceptor):
                aio = " (a grpc.aio interceptor: these run on grpc's sync server)" if _is_aio(item) else ""
                raise RegistryError(
                    f"{where} {_what_item(item)}{aio}, which is not a grpc.ServerInterceptor; {expected}"
                )
            interceptors.append(item)
    return interceptors


def listed(plugin: str, hook: str, returned: Iterable[object]) -> list[object]:
    """What a hook returned, as a list: iterating it runs the plugin's code when it is a
    generator, so what that raises names the plugin as the hook's own raise would."""
    try:
        return list(returned)
    except BaseException as exc:
        raise RegistryError(
            f"plugin {plugin!r}: {hook} raised {raised(exc)} (while what it returned was read)"
        ) from exc


def _is_aio(item: object) -> bool:
    import grpc.aio

    return isinstance(item, grpc.aio.ServerInterceptor)


def _what_item(item: object) -> str:
    if isinstance(item, type):
        return f"the class {item.__qualname__} (an instance of it is what is installed)"
    return f"a {type(item).__name__} ({reprlib.repr(item)})"


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
    """Refuse implementations of hooks that do not exist (typos, stale plugins), naming the hook
    the name was likely meant to be."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hooks = [name for name in vars(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).has_spec()]
        named = re.match(r"unknown hook '([^']+)'", str(exc))
        meant = difflib.get_close_matches(named.group(1), hooks, n=1) if named else []
        hint = f" (did you mean {meant[0]!r}?)" if meant else f" (the hooks: {', '.join(sorted(hooks))})"
        raise RegistryError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}{hint}") from exc
