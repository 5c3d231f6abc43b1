"""McpServer's rules, its normalising step and its enum index, on both paths."""

from __future__ import annotations

import grpc
import pytest
from conftest import Stubs
from stigmer_core import from_rpc_error

from acme_mcp.api.mcpserver.v1 import mcpserver_pb2 as pb

TIMEOUT = 10.0


def server(name: str, transport: int, *, org: str = "", **spec: object) -> pb.McpServer:
    built = pb.McpServer(spec=pb.McpServerSpec(transport=transport, **spec))  # type: ignore[arg-type]
    built.metadata.name = name
    built.metadata.org = org
    return built


def violations(stubs: Stubs, request: pb.McpServer) -> list[tuple[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        stubs.commands.create(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return [(v.field, v.description) for v in from_rpc_error(caught.value).violations]  # type: ignore[attr-defined]


def test_transport_is_required(stubs: Stubs) -> None:
    found = violations(stubs, server("bare", pb.TRANSPORT_UNSPECIFIED))
    assert ("spec.transport", "value is required") in found


def test_each_transport_needs_its_own_field(stubs: Stubs) -> None:
    assert violations(stubs, server("local", pb.STDIO)) == [("spec", "command is required for STDIO")]
    assert violations(stubs, server("remote", pb.HTTP)) == [("spec", "url is required for HTTP")]


def test_tools_are_unique_and_urls_are_urls(stubs: Stubs) -> None:
    found = [field for field, _ in violations(stubs, server("x", pb.HTTP, url="not a url", tools=["a", "a"]))]
    assert sorted(found) == ["spec.tools", "spec.url"]


def test_tool_names_are_stored_lower_cased_once(stubs: Stubs) -> None:
    created = stubs.commands.create(
        server("files", pb.STDIO, command="mcp-files", tools=["Read", "read", "WRITE"]), timeout=TIMEOUT
    )
    assert list(created.spec.tools) == ["read", "write"]
    assert created.status.tool_count == 2
    again = stubs.commands.update(created, timeout=TIMEOUT)
    assert again == created, "writing back what was read changes nothing"


def test_list_by_transport_and_the_list_filter_use_the_value_name(stubs: Stubs) -> None:
    local = stubs.commands.create(server("local", pb.STDIO, command="run"), timeout=TIMEOUT)
    remote = stubs.commands.create(server("remote", pb.HTTP, url="https://mcp.acme.dev/"), timeout=TIMEOUT)
    by_rpc = stubs.queries.listByTransport(pb.ListMcpServersByTransportRequest(transport=pb.STDIO), timeout=TIMEOUT)
    assert [s.metadata.id for s in by_rpc.entries] == [local.metadata.id]
    in_org = stubs.queries.listByTransport(
        pb.ListMcpServersByTransportRequest(org="local", transport=pb.HTTP), timeout=TIMEOUT
    )
    assert [s.metadata.id for s in in_org.entries] == [remote.metadata.id]
    filtered = stubs.queries.list(pb.ListMcpServersRequest(transport=pb.HTTP), timeout=TIMEOUT)
    assert [s.metadata.id for s in filtered.entries] == [remote.metadata.id]


def test_the_environment_reference_must_exist(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stubs.commands.create(
            server("x", pb.STDIO, command="run", environment_id="env-01arz3ndektsv4rrffq69g5fav"), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
