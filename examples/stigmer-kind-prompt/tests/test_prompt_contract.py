"""The stateful contract every kind keeps, run for Prompt on both paths."""

from stigmer_core.testing import contract_tests

TestPromptInProcess, TestPromptNetwork = contract_tests("Prompt")
