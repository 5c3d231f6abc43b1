"""Installed, the package's kind is served by a real server with no change to
stigmer_core: its services answer server reflection beside the first-party ones."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from stigmer_core.server import Server

from acme_prompt import plugin


def _services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=10)
        return {s.name for r in responses for s in r.list_services_response.service}


def test_reflection_lists_the_prompt_services(stigmer_server: Server) -> None:
    found = _services(stigmer_server.address)
    assert {"acme.prompt.v1.PromptCommandController", "acme.prompt.v1.PromptQueryController"} <= found
    assert "stigmer.agentic.agent.v1.AgentQueryController" in found


def test_the_kind_came_from_the_entry_point_group(stigmer_server: Server) -> None:
    pm = stigmer_server.app.plugin_manager
    assert pm is not None and pm.get_plugin("acme-prompt") is plugin
    kind = stigmer_server.app.registry.kind("prompts")
    assert kind.plugin == "acme-prompt" and kind.decl is plugin.PROMPT
