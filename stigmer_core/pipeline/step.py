"""The step contract and a decorator that turns a function into a step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, overload, runtime_checkable

import attrs

from stigmer_core.pipeline.phase import Phase

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
