"""The stateful contract for Skill (a versioned kind), on the in-process channel and over the network."""

from stigmer_core.testing import contract_tests

TestSkillInProcess, TestSkillNetwork = contract_tests("Skill")
