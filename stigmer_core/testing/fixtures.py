"""pytest fixtures for kinds, registered as the ``stigmer`` pytest plugin.

Installed with stigmer-core (``pytest11`` entry point), so a kind package's
tests can ask for ``stigmer_app``, ``stigmer_server`` or ``stigmer_channel``
without importing anything. Every server listens on 127.0.0.1 with an
ephemeral port; every store lives in the test's temporary directory.

``stigmer_app`` (and everything built on it) runs each test twice: over
LMDB and over PostgreSQL (a schema of its own on the session's throwaway
server, see ``stigmer_core.testing.postgres``), so a kind proves it works on
both engines without a copy of its tests. ``STIGMER_TEST_ENGINES=lmdb`` runs
one engine only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core.application import Application
from stigmer_core.server import Server
from stigmer_core.testing.postgres import selected_engines


def postgres_or_skip() -> str:
    """The session server's URL; skip (or, under CI, fail) when there is none."""
    from stigmer_core.testing import postgres

    if "postgresql" not in selected_engines():
        # Left out on purpose: the protobuf-7 pass runs on LMDB only (the engines see bytes).
        pytest.skip(f"{postgres.ENGINES_ENV} leaves out postgresql")
    try:
        return postgres.shared_url()
    except postgres.PostgresUnavailable as exc:
        if postgres.required():
            pytest.fail(f"CI needs PostgreSQL for the postgresql engine tests: {exc}")
        # A kind author's machine without the server: the LMDB half still runs. CI failed above instead.
        pytest.skip(f"no PostgreSQL for the postgresql engine tests: {exc}")


@pytest.fixture(scope="session")
def stigmer_postgres_url() -> str:
    """A PostgreSQL server for the whole session (base URL, no schema)."""
    return postgres_or_skip()


@pytest.fixture
def stigmer_postgres_store_url(stigmer_postgres_url: str) -> Iterator[str]:
    """A store URL with a schema of its own, dropped after the test."""
    from stigmer_core.testing import postgres

    url = postgres.fresh_schema_url(stigmer_postgres_url)
    yield url
    postgres.drop_schema(url)


@pytest.fixture(params=selected_engines())
def stigmer_store(request: pytest.FixtureRequest) -> str | None:
    """What ``Application.open(store=...)`` takes: None for LMDB, else a fresh schema's URL."""
    if request.param == "lmdb":
        return None
    url: str = request.getfixturevalue("stigmer_postgres_store_url")
    return url


@pytest.fixture
def stigmer_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "stigmer-data"


@pytest.fixture
def stigmer_app(stigmer_data_dir: Path, stigmer_store: str | None) -> Iterator[Application]:
    """Every installed kind over a fresh store (no fsync: tests need none), once per engine."""
    app = Application.open(stigmer_data_dir, durable=False, store=stigmer_store)
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the session's PostgreSQL server, if this session started one."""
    import sys

    module = sys.modules.get("stigmer_core.testing.postgres")
    if module is not None:
        module.stop_shared()
