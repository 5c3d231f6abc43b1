"""The step contract and a decorator that turns a function into a step."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, overload, runtime_checkable

import attrs

from stigmer_core import interrupts
from stigmer_core.errors import PluginFault, StigmerError
from stigmer_core.pipeline.phase import Phase

log = logging.getLogger(__name__)

StepFunction = Callable[[Any], None]
"""What a step calls: ``fn(ctx: RequestContext) -> None``. Typed loosely here
so that kinds (which hold steps) and the request context (which holds a kind)
do not import each other; a step's own signature names ``RequestContext``."""


@runtime_checkable
class Step(Protocol):
    """One unit of a pipeline. Raise a ``StigmerError`` to stop the chain."""

    @property
    def name(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    def __call__(self, ctx: Any) -> None: ...


@attrs.frozen
class FunctionStep:
    name: str
    phase: Phase
    fn: StepFunction

    def __call__(self, ctx: Any) -> None:
        self.fn(ctx)


@overload
def step(phase: StepFunction, /) -> FunctionStep: ...


@overload
def step(phase: Phase = Phase.KIND, *, name: str | None = None) -> Callable[[StepFunction], FunctionStep]: ...


def step(
    phase: Phase | StepFunction = Phase.KIND, *, name: str | None = None
) -> FunctionStep | Callable[[StepFunction], FunctionStep]:
    """Declare a function as a step::

    @step(Phase.VALIDATE)
    def check_schedule(ctx: RequestContext) -> None: ...

    A bare ``@step`` (no parentheses) declares a KIND step, as ``@step()`` does.
    """
    if not isinstance(phase, Phase):  # a bare @step: what it was given is the function
        if not callable(phase) or not isinstance(getattr(phase, "__name__", None), str):
            raise TypeError(f"@step takes a Phase (such as Phase.VALIDATE), not {phase!r}")
        return FunctionStep(phase.__name__, Phase.KIND, phase)
    chosen = phase

    def wrap(fn: StepFunction) -> FunctionStep:
        return FunctionStep(name or fn.__name__, chosen, fn)

    return wrap


_ENGINES = ("lmdb", "psycopg", "psycopg_pool", "stigmer_core.store")
"""Modules whose exceptions pass through a step untouched: the storage engines' and their
drivers' (a conflict to retry, a snapshot that moved, a full map to grow), which the engine
handles or maps itself, and which a step calling the store did not cause."""


def _engine_trouble(exc: BaseException) -> bool:
    module = type(exc).__module__
    return any(module == name or module.startswith(name + ".") for name in _ENGINES)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a person's Ctrl-C, not the code's (``interrupts``): answered as a fault,
    it failed the one call running and the command went on to the next."""
    return isinstance(exc, KeyboardInterrupt) and interrupts.received()


def plugin_fault(exc: BaseException, where: str, plugin: str) -> BaseException:
    """What a plugin's code raising ``exc`` in ``where`` is answered with.

    A ``StigmerError`` (a refusal, or a fault already named) and the store's trouble pass as
    they are. Anything else is a bug in that code, whatever its type: a ``PluginFault``
    (INTERNAL) naming ``where``, logged with the plugin and the traceback, since the one who
    reads it is usually the plugin's author. That includes SystemExit (``sys.exit()`` in a library
    the code calls: argparse, click), KeyboardInterrupt, GeneratorExit and
    asyncio.CancelledError, never meant for a request: left alone, one ends the thread running
    the code (on LMDB the event loop serving every call) or leaves the call unanswered until its
    deadline. Plugin code is sync: no cancel of the call itself arrives here. A person's Ctrl-C
    in a command serving its store in process passes on (``interrupts``).
    """
    if isinstance(exc, StigmerError) or (isinstance(exc, Exception) and _engine_trouble(exc)):
        return exc
    if _interrupted(exc):
        return exc
    if isinstance(exc, Exception):
        log.error(
            "internal error in %s (plugin %r; a bug in that code): %s: %s",
            where, plugin, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip
        return PluginFault(f"internal error in {where}: {type(exc).__name__} (the server's log has its traceback)")
    log.error("internal error in %s (plugin %r): it raised %s", where, plugin, type(exc).__name__, exc_info=exc)
    hint = " (a library exiting the process?)" if isinstance(exc, SystemExit) else ""
    return PluginFault(
        f"internal error in {where}: it raised {type(exc).__name__}{hint}; the server's log has its traceback"
    )


def run_steps(steps: Sequence[Step], run: Sequence[StepFunction], ctx: Any, plugins: Sequence[str] = ()) -> None:
    """Run a pipeline's steps (``run``: their callables, ``steps``: the steps, for naming one);
    what a step raises is answered as ``plugin_fault`` says, naming the plugin that contributed
    the step (``plugins``, one per step: a step another plugin's hook added to this kind is that
    plugin's code), else the kind's."""
    done = 0
    try:
        for run_step in run:
            run_step(ctx)
            done += 1
    except StigmerError:
        raise
    except BaseException as exc:
        plugin = plugins[done] if done < len(plugins) else ctx.kind.plugin
        fault = plugin_fault(exc, f"step '{steps[done].name}' of {ctx.kind.name} {ctx.operation}", plugin)
        if fault is exc:
            raise
        raise fault from (exc if isinstance(exc, Exception) else None)
