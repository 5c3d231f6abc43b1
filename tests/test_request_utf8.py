"""A string field whose bytes are not UTF-8 is refused naming the field, not "error parsing".

protobufjs encodes a JavaScript string cut inside a surrogate pair (half an
emoji, from model output streamed and cut by index) into such bytes; the
parser refuses the whole request without saying where, so the client cannot
tell which of its strings to mend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2
from stigmer_core.server import Server
from stigmer_core.testing.inspect import raw_keys
from tests.hardening_support import fails, fields_of

HALF_EMOJI = "😀".encode("utf-16-be")[:2].decode("utf-16-be", "surrogatepass").encode("utf-8", "surrogatepass")
"""What protobufjs writes for ``'😀'.slice(0, 1)``: a lone high surrogate, ``ed a0 bd``."""


@pytest.fixture
def raw(stigmer_server: Server) -> Iterator[Callable[[str], Callable[..., bytes]]]:
    with grpc.insecure_channel(stigmer_server.address) as channel:
        yield lambda path: channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _mended(message: agent_pb2.Agent | watch_pb2.WatchRequest, marker: str) -> bytes:
    return message.SerializeToString().replace(marker.encode(), b"x" + HALF_EMOJI)


def test_a_lone_surrogate_is_refused_naming_its_field(
    stigmer_app: Application, raw: Callable[[str], Callable[..., bytes]]
) -> None:
    kind = stigmer_app.registry.kind("Agent")
    create = raw(next(path for path, b in kind.methods.items() if b.operation == "create"))
    before = raw_keys(stigmer_app.store)
    cases = {
        "metadata.name": agent_pb2.Agent(metadata={"name": "MARK"}),
        "spec.skill_refs[1].slug": agent_pb2.Agent(
            metadata={"name": "refs"}, spec={"skill_refs": [{"slug": "a"}, {"slug": "MARK"}]}
        ),
        "metadata.labels": agent_pb2.Agent(metadata={"name": "labelled", "labels": {"team": "MARK"}}),
    }
    for field, message in cases.items():
        error = fails(grpc.StatusCode.INVALID_ARGUMENT, lambda m=message: create(_mended(m, "MARK"), timeout=10))
        assert fields_of(error) == [field]
        assert "is not valid UTF-8" in from_rpc_error(error).violations[0].description  # type: ignore[attr-defined]
        assert "Error parsing" not in error.details()
    assert raw_keys(stigmer_app.store) == before
    made = agent_pb2.Agent.FromString(create(agent_pb2.Agent(metadata={"name": "whole 😀"}).SerializeToString()))
    assert made.metadata.name == "whole 😀"


def test_a_watch_filter_that_is_not_utf8_is_refused_naming_it(stigmer_server: Server) -> None:
    request = _mended(watch_pb2.WatchRequest(kind="Agent", labels={"team": "MARK"}), "MARK")
    with grpc.insecure_channel(stigmer_server.address) as channel:
        watch = channel.unary_stream(
            "/stigmer.commons.watch.v1.Watch/Watch", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        error = fails(grpc.StatusCode.INVALID_ARGUMENT, lambda: next(iter(watch(request, timeout=10))))
    assert fields_of(error) == ["labels"]
