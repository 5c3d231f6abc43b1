"""pytest fixtures for kinds, registered as the ``stigmer`` pytest plugin.

Installed with stigmer-core (``pytest11`` entry point), so a kind package's
tests can ask for ``stigmer_app``, ``stigmer_server`` or ``stigmer_channel``
without importing anything. Every server listens on 127.0.0.1 with an
ephemeral port; every store lives in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core.application import Application
from stigmer_core.server import Server


@pytest.fixture
def stigmer_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "stigmer-data"


@pytest.fixture
def stigmer_app(stigmer_data_dir: Path) -> Iterator[Application]:
    """Every installed kind over a fresh LMDB store (sync off: tests need no fsync)."""
    app = Application.open(stigmer_data_dir, durable=False)
    yield app
    app.close()


@pytest.fixture
def stigmer_server(stigmer_app: Application) -> Iterator[Server]:
    server = Server(stigmer_app, "127.0.0.1:0", max_workers=8)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture
def stigmer_inprocess_channel(stigmer_app: Application) -> grpc.Channel:
    return stigmer_app.channel()


@pytest.fixture(params=["in-process", "network"])
def stigmer_channel(request: pytest.FixtureRequest, stigmer_app: Application) -> Iterator[grpc.Channel]:
    """The same test on both paths: in-process channel, then a real server."""
    if request.param == "in-process":
        yield stigmer_app.channel()
        return
    server = Server(stigmer_app, "127.0.0.1:0", max_workers=8)
    server.start()
    channel = grpc.insecure_channel(server.address)
    yield channel
    channel.close()
    server.stop(grace=1)
