"""The stateful contract for Session, on the in-process channel and over the network.

A session needs an AgentInstance of its org: ``prepare`` creates one agent
per org (its default instance) and points every session there, so an
update never moves a session to another instance (that is refused).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.testing import contract_tests
from stigmer_core.testing.contract import KindContract


class SessionContract(KindContract):
    def __init__(self) -> None:
        super().__init__()
        self.instances: dict[str, str] = {}

    def instance_for(self, org: str) -> str:
        if org not in self.instances:
            agent = agent_pb2.Agent()
            agent.metadata.name = f"agent of {org}"
            agent.metadata.org = org
            created: Any = self.client_for("Agent").create(agent)
            self.instances[org] = created.status.default_instance_id
        return self.instances[org]

    def prepare(self, resource: Message, org: str) -> None:
        resource.spec.agent_instance_id = self.instance_for(org)  # type: ignore[attr-defined]


TestSessionInProcess, TestSessionNetwork = contract_tests("Session", base=SessionContract)
