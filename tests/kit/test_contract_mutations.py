"""The contract's power: faults planted in a copy of a correct kind are each caught.

The McpServer example kind passes the contract; each copy here adds one
step that breaks a promise every kind keeps (nothing sent is dropped, a
duplicate slug is ALREADY_EXISTS, a list shows every object, a stale
resource_version is ABORTED, a delete frees the slug). Each run is small
(in-process, short sequences) and must fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings

from stigmer_core import FailedPrecondition, KindDeclaration, RequestContext, step
from stigmer_core.application import Application
from stigmer_core.pipeline.phase import Phase as StepPhase
from stigmer_core.store import keys
from stigmer_core.testing.contract import KindContract, run_contract
from tests.kit.mcp_example import MCP_SERVER, plugin_manager_with

SHRINK_SECONDS = 3.0
SMALL = settings(
    max_examples=120,
    stateful_step_count=20,
    deadline=None,
    database=None,
    derandomize=True,  # the same choices on every run (the ids and times the server answers still differ)
    phases=(Phase.generate, Phase.shrink),
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)


@step(StepPhase.KIND)
def drop_args(ctx: RequestContext) -> None:
    ctx.resource.spec.ClearField("args")  # type: ignore[union-attr]


@step(StepPhase.LOAD)
def duplicate_is_precondition(ctx: RequestContext) -> None:
    meta: Any = ctx.request.metadata  # type: ignore[attr-defined]
    if ctx.store.id_for_slug(ctx.kind, ctx.org, meta.slug) is not None:
        raise FailedPrecondition("taken")


@step(StepPhase.LOAD)
def skip_last_of_page(ctx: RequestContext) -> None:
    """An off-by-one: the last object of the last page is never shown."""
    page: Any = ctx.response
    if not page.next_page_token and page.entries:
        del page.entries[-1]


@step(StepPhase.LOAD)
def ignore_version(ctx: RequestContext) -> None:
    ctx.request.metadata.resource_version = 0  # type: ignore[attr-defined]


@step(StepPhase.PUBLISH)
def keep_slug(ctx: RequestContext) -> None:
    meta: Any = ctx.existing.metadata  # type: ignore[union-attr]
    ctx.store.txn.put(keys.slug_key(ctx.kind.key_prefix, meta.org, meta.slug), meta.id.encode())  # type: ignore[attr-defined]


FAULTS: dict[str, tuple[dict[str, tuple[Any, ...]], tuple[str, ...]]] = {
    # fault: (steps added per operation, what the failure report says: any of)
    "a step drops a field": ({"create": (drop_args,), "update": (drop_args,)}, ("dropped spec.args",)),
    "a duplicate is FAILED_PRECONDITION": (
        {"create": (duplicate_is_precondition,)},
        ("expected StatusCode.ALREADY_EXISTS, got StatusCode.FAILED_PRECONDITION",),
    ),
    "a list skips an object": ({"list": (skip_last_of_page,)}, ("returned ids",)),
    "an update ignores the version": ({"update": (ignore_version,)}, ("expected StatusCode.ABORTED, got OK",)),
    "a delete leaves the slug index": (
        {"delete": (keep_slug,)},
        ("got StatusCode.ALREADY_EXISTS", "got StatusCode.NOT_FOUND", "indexes disagree"),
    ),
}


def _machine(declaration: KindDeclaration) -> type[KindContract]:
    pm = plugin_manager_with(declaration)

    class Contract(KindContract):
        kind_name = "McpServer"

        def open_application(self, data_dir: Path) -> Application:
            return Application.open(data_dir, pm=pm, durable=False)

    return Contract


def _with(extra: dict[str, tuple[Any, ...]]) -> KindDeclaration:
    merged = {op: (*MCP_SERVER.steps.get(op, ()), *extra.get(op, ())) for op in {*MCP_SERVER.steps, *extra}}
    return attrs.evolve(MCP_SERVER, steps=merged)


def test_the_kind_as_written_passes_these_settings() -> None:
    run_contract(_machine(MCP_SERVER), settings=SMALL, shrink_seconds=SHRINK_SECONDS)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_planted_fault_is_caught(fault: str) -> None:
    extra, reports = FAULTS[fault]
    with pytest.raises(AssertionError) as caught:
        run_contract(_machine(_with(extra)), settings=SMALL, shrink_seconds=SHRINK_SECONDS)
    assert any(text in str(caught.value) for text in reports), str(caught.value)
