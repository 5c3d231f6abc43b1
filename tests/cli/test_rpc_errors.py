"""How the CLI reads a failed call: a status a stigmer server sent is that server's answer, even when
its words are a connection's ("the database is unreachable: ... connection refused"); only grpc's own
UNAVAILABLE means the server was not reached."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from stigmer_core import errors, status
from stigmer_core.cli.errors import Unreachable, from_rpc

_DATABASE_DOWN = "the database is unreachable: connection failed: Connection refused, is the server running?"


@pytest.fixture
def refusing() -> Iterator[str]:
    """A gRPC server on 127.0.0.1 whose one method answers as a daemon whose database is down does."""

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        status.abort(context, errors.Unavailable(_DATABASE_DOWN))

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    handlers = {"get": grpc.unary_unary_rpc_method_handler(answer)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Probe", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _failure(target: str) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        method: Any = channel.unary_unary("/probe.Probe/get")
        with pytest.raises(grpc.RpcError) as caught:
            method(b"", timeout=5)
    return caught.value


def test_a_server_saying_its_database_is_unreachable_is_not_a_server_this_client_cannot_reach(refusing: str) -> None:
    """It was "cannot reach the stigmer server at ... (is it running?)", and an import stopped
    blaming the server it had just reached."""
    found = from_rpc(_failure(refusing), refusing)
    assert isinstance(found, errors.Unavailable) and not isinstance(found, Unreachable), found
    assert found.message == _DATABASE_DOWN


def test_a_port_nothing_listens_on_is_unreachable() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{free.getsockname()[1]}"
    found = from_rpc(_failure(target), target)
    assert isinstance(found, Unreachable) and found.message.startswith(f"cannot reach the stigmer server at {target}")


_PROXIED = "upstream connect error: TLS error: CERTIFICATE_VERIFY_FAILED: certificate verify failed"
"""A proxy's words for its own upstream's certificate: this client's TLS files are not at fault."""


def test_a_proxys_unavailable_about_its_upstreams_certificate_is_not_this_clients_tls() -> None:
    """It was "cannot open TLS to the stigmer server at ...: its certificate is not signed by a CA
    this client trusts (give ... --ca-file ...)", sending the user after a file of theirs."""

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, _PROXIED)
        raise AssertionError("abort returned")

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    handlers = {"get": grpc.unary_unary_rpc_method_handler(answer)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Probe", handlers),))
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        found = from_rpc(_failure(target), target)
    finally:
        server.stop(None)
    assert _PROXIED in found.message and not found.message.startswith("cannot open TLS"), found.message
    assert "--ca-file" not in found.message, found.message
