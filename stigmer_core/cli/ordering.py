"""The order ``apply``, ``import`` and ``export`` take kinds in: what others need goes first.

A write that names another object (a declared reference, an owner) fails
unless that object is already there, so a kind comes after every kind it
depends on: the kinds its declaration's ``references`` name, and the kinds
that own its objects (read from the documents' ``ownerReferences``, since a
declaration does not say who owns its objects). Dependencies decide the
order wherever they speak; where they do not, a default rank does: skills
and environments, then agents, then what points at agents, executions last
(``DEFAULT_RANKS``, the one place kinds are named). A kind whose declaration
carries an integer ``apply_rank`` is ranked by it on the same scale; any
other kind ranks after every known one, and equal ranks go by name. A
dependency cycle is broken at the kind that ranks first, so every kind is
still placed.
"""

from __future__ import annotations

import heapq
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


def dependency_order(ranks: Mapping[str, int], after: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Each kind of ``ranks`` -> its position: after the kinds ``after`` names for it.

    Among the kinds whose dependencies are placed, the lowest (rank, name)
    goes next; names ``ranks`` does not know are ignored.
    """
    waits = {kind: {t for t in after.get(kind, ()) if t in ranks and t != kind} for kind in ranks}
    needed_by: dict[str, list[str]] = {kind: [] for kind in ranks}
    for kind, targets in waits.items():
        for target in targets:
            needed_by[target].append(kind)
    ready = [(ranks[k], k) for k, targets in waits.items() if not targets]
    heapq.heapify(ready)
    position: dict[str, int] = {}
    while len(position) < len(ranks):
        if not ready:  # a cycle: release the first-ranked kind still waiting
            kind = min((k for k in ranks if k not in position), key=lambda k: (ranks[k], k))
            waits[kind].clear()
            heapq.heappush(ready, (ranks[kind], kind))
        _, kind = heapq.heappop(ready)
        if kind in position:
            continue
        position[kind] = len(position)
        for waiting in needed_by[kind]:
            targets = waits[waiting]
            if kind in targets:
                targets.discard(kind)
                if not targets and waiting not in position:
                    heapq.heappush(ready, (ranks[waiting], waiting))
    return position
