"""The order apply, import and export take kinds in, from declarations and owner references."""

from __future__ import annotations

import attrs

from stigmer_core.api.agentic.agentinstance.v1 import agentinstance_pb2
from stigmer_core.cli.catalog import Catalog
from stigmer_core.cli.ordering import dependency_order
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager


def _order(ranks: dict[str, int], after: dict[str, list[str]]) -> list[str]:
    position = dependency_order(ranks, after)
    return sorted(position, key=position.__getitem__)


def test_dependencies_first_then_rank_then_name() -> None:
    ranks = {"b": 10, "a": 10, "late": 1, "early": 50}
    assert _order(ranks, {}) == ["late", "a", "b", "early"]
    # "late" waits for "early", which waits for "b"; "a" is free to go first
    assert _order(ranks, {"late": ["early"], "early": ["b"]}) == ["a", "b", "early", "late"]
    # unknown targets and self-references are ignored
    assert _order(ranks, {"a": ["nowhere", "a"]}) == ["late", "a", "b", "early"]


def test_a_cycle_is_broken_at_the_first_ranked_kind() -> None:
    ranks = {"x": 20, "y": 10, "z": 30}
    assert _order(ranks, {"x": ["y"], "y": ["x"], "z": ["x"]}) == ["y", "x", "z"]


def test_first_party_kinds_follow_their_references() -> None:
    catalog = Catalog.from_registry(build_registry(plugin_manager()))
    names = [k.name for k in catalog.kinds]
    for kind in catalog.kinds:
        for target in kind.references:
            assert names.index(target) < names.index(kind.name), (kind.name, target)
    not_configuration = {"AgentExecution", "WorkflowExecution", "ExecutionContext", "ApiToken"}
    assert {k.name for k in catalog.kinds if not k.exported} == not_configuration


def test_owners_named_by_the_objects_come_first() -> None:
    """A kind no declaration orders (here ranked first on purpose) still goes after the owners its objects name."""
    installed = Catalog.from_registry(build_registry(plugin_manager()))
    instance = attrs.evolve(installed.kind("AgentInstance"), rank=1, references=())  # as if nothing declared
    catalog = Catalog([instance if k.name == "AgentInstance" else k for k in installed.kinds])
    assert catalog.kinds[0].name == "AgentInstance"
    owned = agentinstance_pb2.AgentInstance()
    owned.metadata.owner_references.add(kind="Agent", id="agt-01jx3k2m4n5p6q7r8s9t0v1w2x")
    order = catalog.write_order([(instance, owned)])
    assert order["Agent"] < order["AgentInstance"]
    assert catalog.write_order([])["AgentInstance"] == 0
