"""The stateful contract for Agent, on the in-process channel and over the network."""

from stigmer_core.testing import contract_tests

TestAgentInProcess, TestAgentNetwork = contract_tests("Agent")
