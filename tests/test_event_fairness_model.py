"""Every engine prunes the event log as a plain model of store.retention's rules does.

Drawn sequences of commits (each a few events of drawn orgs and sizes) under
drawn revision and byte bounds; after every commit, the revisions the store
holds and what it says was pruned from each org must be the model's. Age is
left out (the model has no clock); tests/test_event_fairness.py covers it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stigmer_core.store import Store
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.retention import EventRetention
from stigmer_core.testing import postgres
from stigmer_core.testing.postgres import selected_engines

ORGS = ("", "a", "b", "c")
Commit = list[tuple[str, int]]
"""A transaction's events: (org, payload size) each."""


@attrs.define
class _Revision:
    number: int
    org: str
    size: int


@attrs.define
class Model:
    """store.retention's rules, written out plainly: a list of revisions, pruned before each append."""

    keep: EventRetention
    held: list[_Revision] = attrs.Factory(list)
    compacted: dict[str, int] = attrs.Factory(dict)
    revision: int = 0

    def commit(self, events: Commit) -> None:
        self.revision += 1
        while True:
            shares: dict[str, list[int]] = {}
            for held in self.held:
                share = shares.setdefault(held.org, [0, 0])
                share[0] += 1
                share[1] += held.size
            if len(self.held) >= self.keep.max_revisions:
                measure = 0
            elif sum(h.size for h in self.held) > self.keep.max_bytes:
                measure = 1
            else:
                break
            org = min(shares, key=lambda o: (-shares[o][measure], o.encode()))
            victim = next(h for h in self.held if h.org == org)
            self.held.remove(victim)
            self.compacted[org] = max(self.compacted.get(org, 0), victim.number)
        orgs = {org for org, _ in events}
        org = events[0][0] if len(orgs) == 1 else ""
        self.held.append(_Revision(self.revision, org, sum(size for _, size in events)))

    def compacted_through(self, orgs: list[str] | None) -> int:
        if orgs is None:
            return max(self.compacted.values(), default=0)
        return max(self.compacted.get(org, 0) for org in [*orgs, ""])


OpenStore = Callable[[EventRetention], "contextlib.AbstractContextManager[Store]"]


@pytest.fixture(params=selected_engines())
def open_store(request: pytest.FixtureRequest) -> OpenStore:
    """A fresh store per drawn example (hypothesis runs many in one test)."""
    if request.param == "lmdb":

        @contextlib.contextmanager
        def lmdb(retention: EventRetention) -> Iterator[Store]:
            with tempfile.TemporaryDirectory() as path, LmdbStore(path, durable=False, retention=retention) as store:
                yield store

        return lmdb
    base: str = request.getfixturevalue("stigmer_postgres_url")

    @contextlib.contextmanager
    def in_postgres(retention: EventRetention) -> Iterator[Store]:
        url = postgres.fresh_schema_url(base)
        store = PostgresStore(url, durable=False, retention=retention)
        try:
            yield store
        finally:
            store.close()
            postgres.drop_schema(url)

    return in_postgres


_commits = st.lists(
    st.lists(st.tuples(st.sampled_from(ORGS), st.integers(1, 300)), min_size=1, max_size=3), min_size=1, max_size=40
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_revisions=st.integers(1, 12), max_bytes=st.integers(0, 2_000), commits=_commits)
def test_the_engines_prune_as_the_rules_say(
    open_store: OpenStore, max_revisions: int, max_bytes: int, commits: list[Commit]
) -> None:
    keep = EventRetention(max_revisions=max_revisions, max_bytes=max_bytes)
    model = Model(keep)
    with open_store(keep) as store:
        for events in commits:

            def write(txn: object, events: Commit = events) -> None:
                for org, size in events:
                    txn.append_event(org.encode() * size if org else b"_" * size, org)  # type: ignore[attr-defined]

            store.transact(write)
            model.commit(events)
            with store.read() as txn:
                held = sorted({revision for revision, _ in txn.events(0)})
                assert held == [h.number for h in model.held]
                for orgs in (["a"], ["b"], ["c"], ["a", "c"], ["nobody"], None):
                    assert txn.compacted_through(orgs) == model.compacted_through(orgs), orgs
