"""The order ``apply`` and ``import`` write kinds in: what others refer to goes first.

Skills and environments come before the agents that use them, agents before
the workflows, sessions and instances that point at them, executions last.
A kind whose declaration carries an integer ``apply_rank`` is placed by it
(on the same scale as the table below), so a third-party kind can slot
itself in; any other kind goes after every known one, by name. A kind whose
declaration lists ``references`` to other kinds is then moved after each of
them, so a reference declared is a reference respected. Within one rank,
documents keep the order they were given in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_RANKS: dict[str, int] = {
    "skill": 10,
    "environment": 10,
    "agent": 20,
    "workflow": 30,
    "agentinstance": 30,
    "workflowinstance": 40,
    "session": 40,
    "agentexecution": 50,
    "workflowexecution": 50,
}
UNKNOWN_RANK = 1000


def rank_of(kind_name: str, declared: object = None) -> int:
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    return DEFAULT_RANKS.get(kind_name.lower(), UNKNOWN_RANK)


def after_references(ranks: Mapping[str, int], references: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """``ranks`` raised so that every kind ranks above the kinds it references.

    Bounded by the number of kinds, so a reference cycle stops the raising
    instead of looping forever.
    """
    raised = dict(ranks)
    targets = {kind: [t for t in found if t in raised and t != kind] for kind, found in references.items()}
    for _ in range(len(raised)):
        changed = False
        for kind, found in targets.items():
            for target in found:
                if raised[kind] <= raised[target]:
                    raised[kind] = raised[target] + 1
                    changed = True
        if not changed:
            break
    return raised
