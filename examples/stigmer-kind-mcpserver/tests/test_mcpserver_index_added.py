"""The transport index "added in a later version": servers stored by a release without it are
found through it after an upgrade, because the daemon rebuilds a newly declared index at start."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import attrs
import pluggy
from stigmer_core import (
    Application,
    CustomOperation,
    KindDeclaration,
    Phase,
    RequestContext,
    Unimplemented,
    hookimpl,
    step,
)
from stigmer_core.kind_client import KindClient
from stigmer_core.pipeline import steps as standard
from stigmer_core.plugins import ENTRY_POINT_GROUP, plugin_manager

from acme_mcp.api.mcpserver.v1 import mcpserver_pb2 as pb
from acme_mcp.plugin import MCP_SERVER


@step(Phase.LOAD)
def not_yet(ctx: RequestContext) -> None:
    raise Unimplemented("listByTransport comes with the transport index")


# The first release had no transport index, so its listByTransport rpc was not served yet
# (a list_by step naming an index the kind does not declare is refused at startup).
FIRST_RELEASE = attrs.evolve(
    MCP_SERVER,
    indexes=(),
    list_filters={},
    operations={**MCP_SERVER.operations, "listByTransport": CustomOperation(steps=(standard.authorize, not_yet))},
)


class Release:
    def __init__(self, declaration: KindDeclaration) -> None:
        self.declaration = declaration

    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [self.declaration]


def serving(declaration: KindDeclaration) -> pluggy.PluginManager:
    """Every installed kind plugin but this package's, plus ``declaration``."""
    others = [ep.load() for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name != "acme-mcp"]
    return plugin_manager(entry_points=False, plugins=[*others, Release(declaration)])


def test_servers_stored_before_the_index_existed_are_found_through_it(tmp_path: Path) -> None:
    with Application.open(tmp_path, pm=serving(FIRST_RELEASE), durable=False) as first:
        client = KindClient(first.channel(), first.registry.kind("McpServer"))
        stored = []
        for name in ("files", "shell"):
            server = pb.McpServer(spec=pb.McpServerSpec(transport=pb.STDIO, command=f"mcp-{name}"))
            server.metadata.name = name
            stored.append(client.create(server).metadata.id)
    with Application.open(tmp_path, pm=serving(MCP_SERVER), durable=False) as upgraded:
        assert [c.rebuilt for c in upgraded.index_changes] == [("transport",)]
        list_by = upgraded.channel().unary_unary(
            "/acme.mcp.v1.McpServerQueryController/listByTransport",
            request_serializer=pb.ListMcpServersByTransportRequest.SerializeToString,
            response_deserializer=pb.McpServerList.FromString,
        )
        found = list_by(pb.ListMcpServersByTransportRequest(org="local", transport=pb.STDIO))
        assert [s.metadata.id for s in found.entries] == stored
