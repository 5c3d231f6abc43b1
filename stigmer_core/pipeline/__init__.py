"""Pipelines: ordered steps over one RequestContext.

Every rpc runs a pipeline. A step is any object with a ``name``, a ``phase``
and ``__call__(ctx) -> None``; it stops the chain by raising a
``StigmerError``. Steps are ordered by phase, then by where they came from
(framework, kind, cross-cutting plugin), so a plugin places a step by saying
*when* it runs, never by editing another pipeline.
"""

from stigmer_core.pipeline.context import RequestContext
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep, Step, step

__all__ = ["FunctionStep", "Phase", "RequestContext", "Step", "step"]
