"""The stateful contract for AgentExecution, on the in-process channel and over the network.

An execution needs a session: ``prepare`` creates one agent and one session
per org and points every execution there. The spec is the execution's
input and cannot change after create, so ``prepare`` also fixes the message
and the runtime values: the contract's updates then change only names,
labels and tags, which is what an execution allows. The ExecutionContext
each create makes is another kind and never shows in these lists.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.testing import contract_tests
from stigmer_core.testing.contract import KindContract


class AgentExecutionContract(KindContract):
    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, tuple[str, str]] = {}

    def session_for(self, org: str) -> tuple[str, str]:
        if org not in self.sessions:
            agent = agent_pb2.Agent()
            agent.metadata.name = f"agent of {org}"
            agent.metadata.org = org
            created: Any = self.client_for("Agent").create(agent)
            session = session_pb2.Session()
            session.metadata.name = f"session of {org}"
            session.metadata.org = org
            session.spec.agent_instance_id = created.status.default_instance_id
            opened: Any = self.client_for("Session").create(session)
            self.sessions[org] = (opened.metadata.id, created.metadata.id)
        return self.sessions[org]

    def prepare(self, resource: Message, org: str) -> None:
        spec: Any = resource.spec  # type: ignore[attr-defined]
        spec.session_id, spec.agent_id = self.session_for(org)
        spec.message = "summarize the open tickets"
        spec.runtime_env.clear()
        spec.runtime_env["MODE"].value = "batch"


TestAgentExecutionInProcess, TestAgentExecutionNetwork = contract_tests("AgentExecution", base=AgentExecutionContract)
