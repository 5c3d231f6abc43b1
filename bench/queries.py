"""Read rpcs of the Agent kind: get by id, getByReference, list.

Gets walk the seeded ids in turn rather than repeating one id, so the rows
read the store the way many clients would, not one hot key. Each scenario
first checks one answer: a fast wrong answer (an empty page, another agent)
would otherwise pass for a speed-up.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import drive
from bench.agents import AgentFixture, Transport
from bench.budget import Budget
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

PAGE = 100
LABEL_TEAM = "t3"


def _measure(
    transport: Transport,
    scenario: str,
    method_name: str,
    requests: Sequence[object],
    runs: Sequence[tuple[int, int]],
    budget: Budget,
    warmup: int,
) -> list[Measurement]:
    """``runs``: (calls in flight, call count) pairs, measured in order after one warm-up."""
    method = getattr(transport.query, method_name)

    def request(i: int) -> object:
        return requests[i % len(requests)]

    drive.warm(lambda i: method(request(i)), warmup)
    return [
        transport.measure(scenario, method, request, in_flight=in_flight, count=count, seconds=budget.seconds)
        for in_flight, count in runs
    ]


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise drive.CallFailed(f"wrong answer, not measured: {what}")


def get(fixture: AgentFixture, budget: Budget) -> list[Measurement]:
    requests = [agent_pb2.AgentId(value=object_id) for object_id in fixture.ids]
    for t in fixture.transports:
        found = t.query.get(requests[0])
        _expect(found.metadata.id == requests[0].value, f"get.{t.name} answered {found.metadata.id!r}")
    runs = ((1, budget.calls), (budget.in_flight, budget.concurrent_calls))
    return [m for t in fixture.transports for m in _measure(t, "get", "get", requests, runs, budget, budget.warmup)]


def get_by_reference(fixture: AgentFixture, budget: Budget) -> list[Measurement]:
    """By org + slug: one slug-index read more than get."""
    requests = [metadata_pb2.ApiResourceReference(slug=slug) for slug in fixture.slugs]
    for t in fixture.transports:
        found = t.query.getByReference(requests[0])
        _expect(found.metadata.slug == requests[0].slug, f"get_by_reference.{t.name} answered {found.metadata.slug!r}")
    runs = ((1, budget.calls),)
    return [
        m
        for t in fixture.transports
        for m in _measure(t, "get_by_reference", "getByReference", requests, runs, budget, budget.warmup)
    ]


def _list(
    scenario: str, request: agent_pb2.ListAgentsRequest, entries: int, fixture: AgentFixture, budget: Budget
) -> list[Measurement]:
    found: list[Measurement] = []
    for transport in fixture.transports:
        page: agent_pb2.AgentList = transport.query.list(request)
        _expect(
            len(page.entries) == entries,
            f"{scenario}.{transport.name} returned {len(page.entries)} entries, expected {entries}",
        )
        runs = ((1, budget.list_calls),)
        for measured in _measure(transport, scenario, "list", [request], runs, budget, max(1, budget.warmup // 10)):
            found.append(measured.with_facts(entries_per_page=len(page.entries), page_bytes=page.ByteSize()))
    return found


def list_page(fixture: AgentFixture, budget: Budget) -> list[Measurement]:
    """The first page of 100 of all agents: an object-range scan."""
    request = agent_pb2.ListAgentsRequest(page_size=PAGE)
    return _list("list", request, min(PAGE, len(fixture.ids)), fixture, budget)


def list_by_label(fixture: AgentFixture, budget: Budget) -> list[Measurement]:
    """One label value (one agent in ten): a label-index scan plus one object read per entry."""
    request = agent_pb2.ListAgentsRequest(page_size=PAGE, labels={"team": LABEL_TEAM})
    return _list("list_label", request, min(PAGE, fixture.team_size(LABEL_TEAM)), fixture, budget)
