"""The McpServer example kind (examples/stigmer-kind-mcpserver), for tests of the kit.

Imported from the repository, not installed: a plugin manager is built with
the first-party kinds (found through their entry points) and the given
McpServer declaration, so a test can serve a changed copy of the kind.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pluggy

from stigmer_core import KindDeclaration, hookimpl
from stigmer_core.plugins import ENTRY_POINT_GROUP, plugin_manager

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stigmer-kind-mcpserver"
# On sys.path only while the package is imported: an editable install of the example (made by
# `make test-examples`) leaves its egg-info in that folder, and with the folder on sys.path every
# later plugin manager of this process would find the example's entry point and serve McpServer.
sys.path.insert(0, str(EXAMPLE))
try:
    from acme_mcp import plugin, steps
    from acme_mcp.api.mcpserver.v1 import mcpserver_pb2
finally:
    sys.path.remove(str(EXAMPLE))

MCP_SERVER = plugin.MCP_SERVER
__all__ = ["MCP_SERVER", "mcpserver_pb2", "plugin", "plugin_manager_with", "steps"]


class _Kinds:
    def __init__(self, *declarations: KindDeclaration) -> None:
        self.declarations = list(declarations)

    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return self.declarations


def plugin_manager_with(*declarations: KindDeclaration) -> pluggy.PluginManager:
    """First-party kinds plus ``declarations`` (an installed McpServer package is left out)."""
    first_party = [
        ep.load()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("stigmer_plugins")
    ]
    return plugin_manager(entry_points=False, plugins=[*first_party, _Kinds(*declarations)])
