"""The in-process channel takes call metadata as grpc's client does.

``Stigmer-Dry-Run: true`` (a capital) is refused by grpc before anything is sent (INTERNAL
"Invalid metadata"), while in process it went through unread and the "dry run" wrote for real;
keys with spaces and values outside printable ASCII went through too.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2


@pytest.mark.parametrize(
    "metadata",
    [[("Stigmer-Dry-Run", "true")], [("bad key", "x")], [("x-trace", "caf\u00e9")], [("x-trace", "a\nb")]],
    ids=["capital", "space", "not-ascii", "newline"],
)
def test_metadata_grpc_refuses_is_refused_in_process_and_nothing_is_written(tmp_path: Path, metadata: list) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        agents = agent_grpc.AgentCommandControllerStub(app.channel())
        made = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="kept"))
        with pytest.raises(grpc.RpcError) as refused:
            agents.create(made, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
        assert refused.value.details().startswith("Invalid metadata")  # type: ignore[attr-defined]
        listed = agent_grpc.AgentQueryControllerStub(app.channel()).list(agent_pb2.ListAgentsRequest())
        assert list(listed.entries) == []
        with pytest.raises(TypeError, match="expected bytes"):
            agents.create(made, metadata=[("x-trace-bin", "text")])
        # what grpc takes goes through: a lowercase dry run writes nothing
        dry = agents.create(made, metadata=[("stigmer-dry-run", "true"), ("x-trace-bin", b"\x00\xff")])
        assert dry.metadata.name == "kept"
        assert list(agent_grpc.AgentQueryControllerStub(app.channel()).list(agent_pb2.ListAgentsRequest()).entries) == []


def test_metadata_values_grpc_takes_as_bytes_are_taken_in_process_as_text(tmp_path: Path) -> None:
    """grpc's client takes bytes for any key, and its server hands them on as text: in process a
    ``("stigmer-dry-run", b"true")`` entry was refused (and before that, not seen as a dry run)."""
    with Application.open(tmp_path / "data", durable=False) as app:
        agents = agent_grpc.AgentCommandControllerStub(app.channel())
        made = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="kept"))
        dry = agents.create(made, metadata=[("stigmer-dry-run", b"true"), ("x-request-id", b"abc")])
        assert dry.metadata.name == "kept"
        assert list(agent_grpc.AgentQueryControllerStub(app.channel()).list(agent_pb2.ListAgentsRequest()).entries) == []
        with pytest.raises(TypeError, match="Expected str"):
            agents.create(made, metadata=[("x-count", 3)])
