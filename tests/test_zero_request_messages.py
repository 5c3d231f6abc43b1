"""A unary call or server stream whose client sends no request message is answered at once.

grpc's asyncio server (the LMDB daemon's) held such a call to its deadline, and a
stopping daemon's drain for its whole grace; grpc's sync server (PostgreSQL's)
answers UNIMPLEMENTED. Both answer it now, and a well-formed call is unchanged.
"""

from __future__ import annotations

import grpc

from stigmer_core.server import Server

NOT_ANSWERED = 30.0
"""A deadline only for a failing run to end: an answered call is back long before."""


def _raw(channel: grpc.Channel, path: str, streamed: bool) -> None:
    make = channel.stream_stream if streamed else channel.stream_unary
    call = make(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    answer = call(iter([]), timeout=NOT_ANSWERED)
    if streamed:
        list(answer)


def test_a_call_without_its_request_message_is_refused_at_once(stigmer_server: Server) -> None:
    with grpc.insecure_channel(stigmer_server.address) as channel:
        for path, streamed in (
            ("/stigmer.agentic.agent.v1.AgentQueryController/get", False),
            ("/stigmer.agentic.agent.v1.AgentCommandController/create", False),
            ("/stigmer.commons.watch.v1.Watch/Watch", True),
        ):
            try:
                _raw(channel, path, streamed)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, (path, exc.code(), exc.details())
                assert "request message" in (exc.details() or ""), exc.details()
            else:
                raise AssertionError(f"{path}: answered without a request")
