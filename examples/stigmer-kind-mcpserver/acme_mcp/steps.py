"""The McpServer kind's own step: tool names are stored lower-cased, each once.

Rules a single message can state (the transport is required, STDIO needs a
command and HTTP a url, tool names are unique) live in the .proto, where the
framework's ``validate`` step and the testing kit's strategies both read
them. What is left here is normalisation, which the contract accepts as
long as nothing sent is dropped and writing back a read changes nothing.
"""

from __future__ import annotations

from stigmer_core import Phase, RequestContext, step

from acme_mcp.api.mcpserver.v1 import mcpserver_pb2


def normalise_tools(spec: mcpserver_pb2.McpServerSpec) -> None:
    """Lower-case the tool names in place, keeping the first of each and their order."""
    seen: dict[str, None] = dict.fromkeys(name.lower() for name in spec.tools)
    del spec.tools[:]
    spec.tools.extend(seen)


@step(Phase.KIND)
def normalise(ctx: RequestContext) -> None:
    """Tools as stored; ``status.tool_count`` says how many there are."""
    server = ctx.resource
    assert isinstance(server, mcpserver_pb2.McpServer)
    normalise_tools(server.spec)
    server.status.tool_count = len(server.spec.tools)
