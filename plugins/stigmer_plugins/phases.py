"""The execution phases and which of them are final.

Kept apart from ``lifecycle`` (which enforces transitions and seals contexts)
so that the execution-context kind can ask whether a run is live without
importing the lifecycle that imports it.
"""

from __future__ import annotations

from stigmer_core.api.agentic.execution.v1 import execution_pb2

PENDING = execution_pb2.EXECUTION_PENDING
IN_PROGRESS = execution_pb2.EXECUTION_IN_PROGRESS
COMPLETED = execution_pb2.EXECUTION_COMPLETED
FAILED = execution_pb2.EXECUTION_FAILED
CANCELLED = execution_pb2.EXECUTION_CANCELLED

TERMINAL: frozenset[int] = frozenset({COMPLETED, FAILED, CANCELLED})


def phase_name(phase: int) -> str:
    value = execution_pb2.ExecutionPhase.DESCRIPTOR.values_by_number.get(phase)
    return value.name if value is not None else str(phase)


def is_terminal(phase: int) -> bool:
    return phase in TERMINAL
