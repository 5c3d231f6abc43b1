"""A list selecting several labels reads the narrowest label's index, on every engine.

Every label of an object is indexed; a list reads one label's range and
checks the others on each object. It used to read the first label in order,
so a selector pairing a label shared by most of an org with a rare one
passed up to ``max_list_skipped`` objects a page to find a few: 88-101 ms a
page in an org of 100,000 agents on PostgreSQL, against 11-16 ms in a small
one. The ranges are read in step, up to ``LABEL_PROBE`` entries each, and
the first to end is the one read. Every label's range is in id order, so a page token of one
continues in another when the narrowest changes between pages.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.limits import Limits
from tests.hardening_support import network


@pytest.fixture
def agents(stigmer_app: Application) -> Iterator[KindClient]:
    server, channel = network(stigmer_app)
    stigmer_app.registry.limits = Limits(max_list_skipped=10)
    yield KindClient(channel, stigmer_app.registry.kind("Agent"))
    channel.close()
    server.stop(grace=1)


def _agent(agents: KindClient, name: str, **labels: str) -> str:
    made = agents.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, labels=labels)))
    return str(made.metadata.id)


def test_a_rare_label_beside_a_common_one_is_listed_in_one_page(agents: KindClient) -> None:
    """The common label comes first in order, as it did in the range read before."""
    wanted = []
    for i in range(30):
        rare = i % 15 == 7
        made = _agent(agents, f"a {i}", everyone="yes", **({"zz": "rare"} if rare else {}))
        wanted += [made] if rare else []
    page = agents.list_page(labels={"everyone": "yes", "zz": "rare"}, page_size=100)
    assert sorted(entry.metadata.id for entry in page.entries) == sorted(wanted)
    assert not page.next_page_token  # 28 passed over at 10 a page took three pages
    empty = agents.list_page(labels={"everyone": "yes", "zz": "never"}, page_size=100)
    assert list(empty.entries) == [] and not empty.next_page_token  # a label no object has: the end at once


def test_a_page_token_continues_when_another_label_becomes_the_narrowest(agents: KindClient) -> None:
    both = sorted(_agent(agents, f"b {i}", x="1", y="1") for i in range(3))
    _agent(agents, "y only", y="1")
    first = agents.list_page(labels={"x": "1", "y": "1"}, page_size=1)  # x: 3 entries, y: 4
    assert [entry.metadata.id for entry in first.entries] == both[:1] and first.next_page_token
    for i in range(2):
        _agent(agents, f"x only {i}", x="1")  # now x: 5 entries, y: 4: y's range is read
    seen, token = [], first.next_page_token
    while token:
        page = agents.list_page(labels={"x": "1", "y": "1"}, page_size=1, page_token=token)
        seen += [entry.metadata.id for entry in page.entries]
        token = page.next_page_token
    assert seen == both[1:]
