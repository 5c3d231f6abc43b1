"""Columns a kind declares are what ``stigmer get`` shows; ``apply_rank`` is a declaration field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click
import pytest

from stigmer_core import PrinterColumn, RegistryError
from stigmer_core.application import Application
from stigmer_core.cli import render
from stigmer_core.cli.catalog import Catalog
from stigmer_core.kind_client import KindClient
from tests.kit.mcp_example import MCP_SERVER, mcpserver_pb2, plugin_manager_with

pb: Any = mcpserver_pb2


def test_declared_columns_are_shown(tmp_path: Path) -> None:
    with Application.open(tmp_path, pm=plugin_manager_with(MCP_SERVER), durable=False) as app:
        client = KindClient(app.channel(), app.registry.kind("McpServer"))
        server = pb.McpServer(spec=pb.McpServerSpec(transport=pb.STDIO, command="run", tools=["Read", "write"]))
        server.metadata.name = "files"
        client.create(server)
        kind = Catalog.from_registry(app.registry).kind("mcpservers")
        page: Any = client.list_page()
        text = click.unstyle(render.resource_table(kind, list(page.entries)))
    header, row = text.splitlines()
    assert header.split() == ["NAME", "ID", "AGE", "TRANSPORT", "TOOLS", "ENVIRONMENT"]
    assert row.split()[0] == "files" and row.split()[3:] == ["STDIO", "2", "<none>"]


def test_a_status_of_messages_alone_gets_no_column(tmp_path: Path) -> None:
    """An AgentInstance's status holds its audit only, and its table had a STATUS column of
    ``<none>`` on every row; an Agent's shows its first plain status field."""
    from stigmer_core.api.agentic.agent.v1 import agent_pb2

    with Application.open(tmp_path, durable=False) as app:
        created = KindClient(app.channel(), app.registry.kind("Agent")).create(agent_pb2.Agent(metadata={"name": "bot"}))
        catalog = Catalog.from_registry(app.registry)
        agents = click.unstyle(render.resource_table(catalog.kind("agents"), [created]))
        instance = KindClient(app.channel(), app.registry.kind("AgentInstance")).get(created.status.default_instance_id)
        instances = click.unstyle(render.resource_table(catalog.kind("agentinstances"), [instance]))
    assert agents.splitlines()[0].split() == ["NAME", "ID", "AGE", "DEFAULT", "INSTANCE", "ID"]
    assert instances.splitlines()[0].split() == ["NAME", "ID", "AGE"]
    assert instances.splitlines()[1].split()[:2] == ["bot-default", instance.metadata.id]


def test_a_column_naming_no_field_stops_startup(tmp_path: Path) -> None:
    broken = attrs.evolve(MCP_SERVER, printer_columns=(PrinterColumn("x", "spec.nothing"),))
    with pytest.raises(RegistryError, match=r"printer column 'x': no field 'spec\.nothing'"):
        Application.open(tmp_path, pm=plugin_manager_with(broken), durable=False)


def test_apply_rank_places_the_kind(tmp_path: Path) -> None:
    with Application.open(
        tmp_path, pm=plugin_manager_with(attrs.evolve(MCP_SERVER, apply_rank=1)), durable=False
    ) as app:
        catalog = Catalog.from_registry(app.registry)
    order = [k.name for k in catalog.kinds]
    assert order.index("Environment") < order.index("McpServer") < order.index("Skill"), order  # references first
    assert catalog.kind("mcp").rank == 1
