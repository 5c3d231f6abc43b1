"""The contract again, told exactly what the kind's step does to a spec.

With ``normalise`` the contract expects each write to return precisely the
sent spec transformed, not merely one that keeps every field sent.
"""

from stigmer_core.testing import contract_tests

from acme_mcp.steps import normalise_tools

TestMcpServerExactInProcess, TestMcpServerExactNetwork = contract_tests("McpServer", normalise=normalise_tools)
