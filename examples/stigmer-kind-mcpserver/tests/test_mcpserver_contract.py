"""The stateful contract every kind keeps, run for McpServer on both paths.

No ``prepare``: drawn specs meet the proto's rules (the required transport,
the CEL rules across fields, unique tools), the optional Environment
reference is left empty, and the lower-casing step passes because the
contract compares reads with what writes returned.
"""

from stigmer_core.testing import contract_tests

TestMcpServerInProcess, TestMcpServerNetwork = contract_tests("McpServer")
