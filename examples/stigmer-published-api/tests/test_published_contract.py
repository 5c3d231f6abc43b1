"""The stateful contract every kind keeps, for the published Agent and Session.

The published API differs from ours where the contract reads it from the
descriptors: objects carry ``kind: "Agent"`` (a const rule the contract
sends), metadata follows the published schema, and an update is an
``UpdateAgentInput{resource, update_mask}`` that must name its target by
id, so the contract sends updates by id with masks drawn from the kind's
declared ``mutable`` paths. The Agent needs nothing more.

A session needs its agent to exist (``spec.agent_ref``), which is what
``prepare`` is for: one agent per org, made on first use, named by id.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message
from stigmer_core.application import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.testing import KindContract, contract_tests
from stigmer_core.testing.contract import UpdateForm

from stigmer_published.agent import AGENT, API_VERSION
from stigmer_published.session import SESSION

TestStigmerAgentInProcess, TestStigmerAgentNetwork = contract_tests("StigmerAgent")


class SessionContract(KindContract):
    def prepare(self, resource: Message, org: str) -> None:
        agents: dict[str, str] = self.__dict__.setdefault("agents", {})
        if org not in agents:
            client = self.client_for("StigmerAgent")
            agent = client.kind.resource_cls(api_version=API_VERSION, kind="Agent")
            agent.metadata.name, agent.metadata.org = "Session agent", org  # type: ignore[attr-defined]
            agent.spec.instructions = "Answer the session's questions."  # type: ignore[attr-defined]
            agents[org] = client.create(agent).metadata.id  # type: ignore[attr-defined]
        resource.spec.ClearField("agent_ref")  # type: ignore[attr-defined]
        resource.spec.agent_ref.id = agents[org]  # type: ignore[attr-defined]


TestStigmerSessionInProcess, TestStigmerSessionNetwork = contract_tests("StigmerSession", SessionContract)


def test_what_an_update_needs_is_read_from_the_descriptors(tmp_path: Path) -> None:
    """The published update wraps the resource with a mask and wants an id; ours takes the resource."""
    with Application.open(tmp_path, durable=False) as app:
        agent, session, ours = (app.registry.kind(n) for n in ("StigmerAgent", "StigmerSession", "Agent"))
        assert UpdateForm.of(agent) == UpdateForm(mask=True, by_id=True, mutable=AGENT.mutable)
        assert UpdateForm.of(session) == UpdateForm(mask=True, by_id=True, mutable=SESSION.mutable)
        assert UpdateForm.of(ours) == UpdateForm(
            mask=False, by_id=False, mutable=("metadata.name", "metadata.labels", "metadata.tags", "spec")
        )
        assert KindClient(app.channel(), agent).update_mask == "update_mask"
        assert KindClient(app.channel(), ours).update_mask is None
