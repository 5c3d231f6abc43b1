"""The ``stigmer`` pytest plugin (installed with stigmer-core) gives the app,
channel and server fixtures; this adds the McpServer stubs on both paths."""

from __future__ import annotations

import grpc
import pytest

from acme_mcp.api.mcpserver.v1 import service_pb2_grpc


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.commands = service_pb2_grpc.McpServerCommandControllerStub(channel)
        self.queries = service_pb2_grpc.McpServerQueryControllerStub(channel)


@pytest.fixture
def stubs(stigmer_channel: grpc.Channel) -> Stubs:
    return Stubs(stigmer_channel)
