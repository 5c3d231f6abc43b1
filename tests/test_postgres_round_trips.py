"""How many round trips an Agent create and a cascade delete make on PostgreSQL, a count and not a speed: each
one with the revision lock held is time every other writer of the schema waits, so a change
that adds one must mean to (docs/design.md, Revision order)."""

from __future__ import annotations

from bench import round_trips

ROUND_TRIPS = 4
"""``BEGIN`` with the lock and the kinds' release records; the agent's slug with the org's usage;
the default instance's slug, fallback slug and id; the commit, its held puts and events first."""


def test_an_agent_create_takes_four_round_trips(stigmer_postgres_url: str) -> None:
    counted = round_trips.per_create(stigmer_postgres_url)
    assert counted["round_trips"] <= ROUND_TRIPS, counted
    assert counted["statements"] >= counted["round_trips"], counted


CASCADE_ROUND_TRIPS = 16
"""A whole cascade delete of an agent, its default instance and 200 sessions: a few round trips
a level of the tree (what its objects own, then those objects), their referrers and their
versions a few hundred objects a statement, and the commit with every removal in one
statement. It was 11 an object (a round trip per key removed), then 3 (each object's reads),
and one editor's delete of a large tree held every org's writes for seconds."""


def test_a_cascade_delete_reads_a_level_of_its_tree_at_once_and_sends_its_removals_together(
    stigmer_postgres_url: str,
) -> None:
    counted = round_trips.per_cascade_delete(stigmer_postgres_url)
    in_all = counted["round_trips"] * (round_trips.OWNED + 2)
    assert in_all <= CASCADE_ROUND_TRIPS, counted


REFUSED_ROUND_TRIPS = 7
"""A delete refused for its tree's size: the lock, the root, and its owned entries a level at a
time, the last read bounded, before any object of the tree. It read every object up to the limit first (here a round trip per
session, about a hundred; ten thousand at the default limit), holding every org's writes, and
was free to repeat."""


def test_a_delete_refused_for_its_trees_size_reads_no_more_than_the_limit_allows(stigmer_postgres_url: str) -> None:
    counted = round_trips.refused_cascade_delete(stigmer_postgres_url)
    assert counted["round_trips"] <= REFUSED_ROUND_TRIPS, counted
