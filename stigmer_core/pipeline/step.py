"""The step contract and a decorator that turns a function into a step."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from stigmer_core.pipeline.phase import Phase

if TYPE_CHECKING:
    from stigmer_core.pipeline.context import RequestContext


@runtime_checkable
class Step(Protocol):
    """One unit of a pipeline. Raise a ``StigmerError`` to stop the chain."""

    @property
    def name(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    def __call__(self, ctx: RequestContext) -> None: ...


@attrs.frozen
class FunctionStep:
    name: str
    phase: Phase
    fn: Callable[[RequestContext], None]

    def __call__(self, ctx: RequestContext) -> None:
        self.fn(ctx)


def step(
    phase: Phase = Phase.KIND, *, name: str | None = None
) -> Callable[[Callable[[RequestContext], None]], FunctionStep]:
    """Declare a function as a step::

    @step(Phase.KIND)
    def create_default_instance(ctx: RequestContext) -> None: ...
    """

    def wrap(fn: Callable[[RequestContext], None]) -> FunctionStep:
        return FunctionStep(name or fn.__name__, phase, fn)

    return wrap
