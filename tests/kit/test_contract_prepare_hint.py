"""A kind requiring a reference fails the contract until its test overrides ``prepare``: the
contract clears reference fields (drawn ids name nothing), and the failure says where the fix goes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings

from stigmer_core.testing.contract import KindContract, run_contract

SMALL = settings(
    max_examples=5,
    stateful_step_count=5,
    deadline=None,
    database=None,
    derandomize=True,
    phases=(Phase.generate,),
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)


class SessionWithoutPrepare(KindContract):
    kind_name = "Session"  # spec.agent_instance_id is a required Reference to an AgentInstance


def test_a_required_reference_without_prepare_says_to_override_it() -> None:
    with pytest.raises(AssertionError) as caught:
        run_contract(SessionWithoutPrepare, settings=SMALL, shrink_seconds=1.0)
    said = str(caught.value)
    assert "spec.agent_instance_id" in said, said
    assert "override prepare(resource, org) in SessionWithoutPrepare" in said, said
