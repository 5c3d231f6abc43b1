"""The stateful contract every kind keeps, for the published Agent served as StigmerAgent.

Its objects carry the published ``kind: "Agent"`` rather than the registered
name, and its metadata follows the published schema; the contract takes
both from what the writes return and what the schema declares.
"""

from stigmer_core.testing import contract_tests

TestStigmerAgentInProcess, TestStigmerAgentNetwork = contract_tests("StigmerAgent")
