"""Agent MCP server headers named in ``secret_headers``: sealed at rest, redacted in every
response, stream, event and export, kept when the marker is written back, re-sealed by
key rotation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.store import keys
from stigmer_plugins.agent import header_context
from stigmer_plugins.secrets import PREFIX, REDACTED, box, secrets
from tests.test_agent_execution_secrets import _export

# '-' is not in the base64 alphabet, so no ciphertext can contain these by chance.
API_KEY = "Bearer sk-canary-5e1d-Q"
NEW_API_KEY = "Bearer sk-rotated-77a0-Z"


def _agent(name: str = "coder", *, key: str = API_KEY, secret: bool = True) -> agent_pb2.Agent:
    agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name))
    server = agent.spec.mcp_servers.add(name="github", url="https://mcp.example.com")
    server.headers["Authorization"] = key
    server.headers["X-Trace"] = "on"
    if secret:
        server.secret_headers.append("Authorization")
    return agent


def _stubs(channel: grpc.Channel) -> tuple[Any, Any]:
    return agent_grpc.AgentCommandControllerStub(channel), agent_grpc.AgentQueryControllerStub(channel)


def _stored(app: Application, agent_id: str) -> agent_pb2.Agent:
    with app.store.read() as txn:
        raw = txn.get(keys.object_key("agents", agent_id))
    assert raw is not None
    return agent_pb2.Agent.FromString(raw)


def _everything_stored(app: Application) -> bytes:
    with app.store.read() as txn:
        objects = b"".join(k + v for k, v in txn.scan(b""))
        events = b"".join(payload for _, payload in txn.events(0))
    return objects + events


def _error(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10)
    return err.value


def test_secret_headers_are_sealed_and_never_returned(
    stigmer_app: Application, stigmer_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    commands, queries = _stubs(stigmer_channel)
    created = commands.create(_agent())
    agent_id = created.metadata.id
    responses = [
        created,
        queries.get(agent_pb2.AgentId(value=agent_id)),
        *queries.list(agent_pb2.ListAgentsRequest(org="local")).entries,
        queries.getByReference(metadata_pb2.ApiResourceReference(slug="coder")),
    ]
    for response in responses:
        server = response.spec.mcp_servers[0]
        assert server.headers["Authorization"] == REDACTED and server.headers["X-Trace"] == "on"
        assert API_KEY.encode() not in response.SerializeToString()
    stored = _stored(stigmer_app, agent_id).spec.mcp_servers[0].headers["Authorization"]
    assert stored.startswith(PREFIX)
    context = header_context(agent_id, "github", "Authorization")
    assert box(stigmer_app.registry).decrypt(stored, context) == API_KEY
    assert API_KEY.encode() not in _everything_stored(stigmer_app), "not in the objects, not in the event log"
    assert list(created.status.unset_secret_headers) == []

    # the marker written back, and the same clear value again, keep the stored secret: nothing changes
    assert commands.update(created) == created
    resent = agent_pb2.Agent()
    resent.CopyFrom(created)
    resent.spec.mcp_servers[0].headers["Authorization"] = API_KEY
    assert commands.update(resent).metadata.resource_version == created.metadata.resource_version
    assert _stored(stigmer_app, agent_id).spec.mcp_servers[0].headers["Authorization"] == stored

    # a new clear value is sealed in its place
    resent.spec.mcp_servers[0].headers["Authorization"] = NEW_API_KEY
    updated = commands.update(resent)
    assert updated.spec.mcp_servers[0].headers["Authorization"] == REDACTED
    now = _stored(stigmer_app, agent_id).spec.mcp_servers[0].headers["Authorization"]
    assert box(stigmer_app.registry).decrypt(now, context) == NEW_API_KEY
    deleted = commands.delete(agent_pb2.AgentId(value=agent_id))
    assert deleted.spec.mcp_servers[0].headers["Authorization"] == REDACTED
    assert not any(s.encode() in _everything_stored(stigmer_app) for s in (API_KEY, NEW_API_KEY))
    assert API_KEY not in caplog.text and NEW_API_KEY not in caplog.text


def test_refusals_name_the_field(stigmer_channel: grpc.Channel) -> None:
    commands, _ = _stubs(stigmer_channel)
    stray = _agent()
    stray.spec.mcp_servers[0].secret_headers.append("X-Api-Key")
    err = _error(commands.create, stray)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.mcp_servers[0].secret_headers" in err.details() and "X-Api-Key" in err.details()

    created = commands.create(_agent())
    unmarked = agent_pb2.Agent()
    unmarked.CopyFrom(created)
    del unmarked.spec.mcp_servers[0].secret_headers[:]  # the marker, no longer declared secret
    err = _error(commands.update, unmarked)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'spec.mcp_servers[0].headers["Authorization"]' in err.details()

    # declassifying with the clear value is allowed
    unmarked.spec.mcp_servers[0].headers["Authorization"] = "Bearer public"
    assert commands.update(unmarked).spec.mcp_servers[0].headers["Authorization"] == "Bearer public"


def test_the_marker_keeps_a_secret_only_where_it_was_sent(stigmer_channel: grpc.Channel) -> None:
    """An editor who was never shown a secret header pointed its server at a host of its own, sent
    the marker back, and the stored secret went along: a runner would have handed it over."""
    commands, queries = _stubs(stigmer_channel)
    created = commands.create(_agent())
    for move in ("url", "command", "args"):
        moved = agent_pb2.Agent()
        moved.CopyFrom(created)
        server = moved.spec.mcp_servers[0]
        if move == "url":
            server.url = "https://collector.example.net/"
        elif move == "command":
            server.command = "/usr/bin/env"
        else:
            server.args.append("--verbose")
        err = _error(commands.update, moved)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, move
        assert 'spec.mcp_servers[0].headers["Authorization"]' in err.details(), err.details()
        assert "send its value again" in err.details()
    assert queries.get(agent_pb2.AgentId(value=created.metadata.id)) == created  # nothing written
    # the same server elsewhere with the value sent again: stored, sealed, for its new place
    moved = agent_pb2.Agent()
    moved.CopyFrom(created)
    moved.spec.mcp_servers[0].url = "https://mcp2.example.com"
    moved.spec.mcp_servers[0].headers["Authorization"] = NEW_API_KEY
    updated = commands.update(moved)
    assert updated.spec.mcp_servers[0].headers["Authorization"] == REDACTED
    assert list(updated.status.unset_secret_headers) == []
    # unchanged destination, other edits: the marker still keeps it
    edited = agent_pb2.Agent()
    edited.CopyFrom(updated)
    edited.spec.description = "now on mcp2"
    assert list(commands.update(edited).status.unset_secret_headers) == []


def test_a_header_an_http_client_would_split_is_refused(stigmer_channel: grpc.Channel) -> None:
    """A value with CR LF (or a name with a space) was stored, and a runner handing it to an HTTP
    client would have sent a header nobody wrote."""
    commands, _ = _stubs(stigmer_channel)
    for name, value in (("X-Trace", "on\r\nX-Admin: yes"), ("X Trace", "on"), ("X-Trace", "nul\x00")):
        bad = _agent(f"bad {len(value)} {name[1]}", key=API_KEY)
        del bad.spec.mcp_servers[0].headers["X-Trace"]
        bad.spec.mcp_servers[0].headers[name] = value
        err = _error(commands.create, bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert f'spec.mcp_servers[0].headers["{name}"]' in err.details()
    assert commands.create(_agent("fine")).spec.mcp_servers[0].headers["X-Trace"] == "on"


def test_the_marker_without_a_stored_secret_leaves_the_header_unset(stigmer_channel: grpc.Channel) -> None:
    commands, _ = _stubs(stigmer_channel)
    restored = commands.create(_agent(key=REDACTED))
    assert list(restored.status.unset_secret_headers) == ["github/Authorization"]
    assert restored.spec.mcp_servers[0].headers["Authorization"] == REDACTED
    restored.spec.mcp_servers[0].headers["Authorization"] = API_KEY
    assert list(commands.update(restored).status.unset_secret_headers) == []


def test_export_carries_the_marker_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False) as app:
        channel = app.channel()
        _stubs(channel)[0].create(_agent())
        channel.close()
    exported = _export(data)
    assert "secretHeaders" in exported and REDACTED in exported and API_KEY not in exported


def test_key_rotation_reseals_headers(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        channel = app.channel()
        agent_id = _stubs(channel)[0].create(_agent()).metadata.id
        channel.close()
        before = _stored(app, agent_id).spec.mcp_servers[0].headers["Authorization"]
        keyring = secrets(app.registry)
        old = keyring.master
        done = keyring.rotate(app.store, app.registry, bytes(range(32)), lambda key: None)
        assert done.objects == 1
        after = _stored(app, agent_id).spec.mcp_servers[0].headers["Authorization"]
        context = header_context(agent_id, "github", "Authorization")
        assert after != before and keyring.master.decrypt(after, context) == API_KEY
        with pytest.raises(Exception, match=r"does not decrypt|not sealed"):
            old.decrypt(after, context)


def test_an_agent_is_sent_unredacted_only_when_redaction_would_change_nothing() -> None:
    """``redacts`` lets an agent without secret headers skip the redacted copy; it must
    answer True for every agent that redaction changes."""
    from stigmer_plugins.agent import has_secret_headers, redact_mcp_headers

    def agent(headers: dict[str, str], secret: list[str]) -> agent_pb2.Agent:
        found = agent_pb2.Agent()
        if headers or secret:
            server = found.spec.mcp_servers.add(name="github")
            server.headers.update(headers)
            server.secret_headers.extend(secret)
        return found

    cases = [
        agent({}, []),
        agent({"X-Trace": "on"}, []),
        agent({"X-Trace": "on"}, ["Authorization"]),  # names a header it does not carry
        agent({"Authorization": "token", "X-Trace": "on"}, ["Authorization"]),
        agent({"Authorization": ""}, ["Authorization"]),
    ]
    for case in cases:
        shown = agent_pb2.Agent()
        shown.CopyFrom(case)
        redact_mcp_headers(shown)
        if shown != case:
            assert has_secret_headers(case)
    assert has_secret_headers(cases[3]) and not has_secret_headers(cases[0]) and not has_secret_headers(cases[2])
