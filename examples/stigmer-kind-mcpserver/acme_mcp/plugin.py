"""The McpServer kind, declared: the whole of what Stigmer Core needs to serve it.

Registered in pyproject.toml under the ``stigmer.kinds`` entry-point group.
"""

from __future__ import annotations

from google.protobuf.message import Message
from stigmer_core import CustomOperation, IndexSpec, KindDeclaration, PrinterColumn, Reference, hookimpl
from stigmer_core.pipeline import steps as standard

from acme_mcp import steps
from acme_mcp.api.mcpserver.v1 import mcpserver_pb2, service_pb2


def transport_values(server: Message) -> list[tuple[str, ...]]:
    """Index entries by transport *name* (``STDIO``): the encoding list filters and ``list_by`` read."""
    assert isinstance(server, mcpserver_pb2.McpServer)
    transport = server.spec.transport
    return [(mcpserver_pb2.Transport.Name(transport),)] if transport else []


TRANSPORT_INDEX = IndexSpec("transport", transport_values)

_services = service_pb2.DESCRIPTOR.services_by_name

MCP_SERVER = KindDeclaration(
    name="McpServer",
    resource=mcpserver_pb2.McpServer,
    command_service=_services["McpServerCommandController"],
    query_service=_services["McpServerQueryController"],
    id_prefix="mcp",
    key_prefix="mcp-servers",
    steps={"create": (steps.normalise,), "update": (steps.normalise,)},
    operations={
        "listByTransport": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.list_by("transport", "transport"))
        ),
    },
    indexes=(TRANSPORT_INDEX,),
    list_filters={"transport": "transport"},
    references=(Reference("spec.environment_id", "Environment"),),
    printer_columns=(
        PrinterColumn("transport", "spec.transport"),
        PrinterColumn("tools", "status.tool_count", "integer"),
        PrinterColumn("environment", "spec.environment_id"),
    ),
    api_version="mcp.acme.dev/v1",
    plural="mcpservers",
    aliases=("mcp",),
    description="An MCP server agents can use: its transport and its tools.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [MCP_SERVER]
