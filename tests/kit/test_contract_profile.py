"""``STIGMER_CONTRACT_PROFILE`` names a profile in any case; a name of none is refused, not run as quick."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stigmer_core.testing import contract

READ_PROFILE = "from stigmer_core.testing import contract as c; print(c.CONTRACT_SETTINGS.max_examples)"


@pytest.mark.parametrize("name", ["thorough", "THOROUGH", "Thorough", " thorough "])
def test_the_thorough_profile_is_named_in_any_case(name: str) -> None:
    assert contract.profile(name) == (contract.THOROUGH, contract.SHRINK_SECONDS["thorough"])


@pytest.mark.parametrize("name", [None, "", "QUICK", "quick"])
def test_unset_or_quick_is_quick(name: str | None) -> None:
    assert contract.profile(name) == (contract.QUICK, contract.SHRINK_SECONDS["quick"])


def test_a_name_of_no_profile_is_refused_saying_which_there_are() -> None:
    with pytest.raises(ValueError, match=r"^STIGMER_CONTRACT_PROFILE='thorogh' names no contract profile: use one of quick, thorough"):
        contract.profile("thorogh")


def _import_with(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STIGMER_CONTRACT_PROFILE": value}
    return subprocess.run([sys.executable, "-c", READ_PROFILE], capture_output=True, text=True, env=env, timeout=120)


def test_the_variable_chooses_the_profile_of_a_whole_run() -> None:
    done = _import_with("THOROUGH")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(contract.THOROUGH.max_examples)
    refused = _import_with("thorogh")
    assert refused.returncode != 0 and "names no contract profile" in refused.stderr
