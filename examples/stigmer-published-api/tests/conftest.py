"""The official SDK client, pointed at a real server on an ephemeral 127.0.0.1
port (the ``stigmer_server`` fixture of the ``stigmer`` pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stigmer import StigmerClient
from stigmer_core.server import Server

API_KEY = "sk_test_local_daemon"


@pytest.fixture
def client(stigmer_server: Server) -> Iterator[StigmerClient]:
    with StigmerClient(API_KEY, base_url=stigmer_server.address, insecure=True) as sdk:
        yield sdk
