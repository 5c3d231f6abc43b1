"""Every refusal names its reason in a google.rpc.ErrorInfo (an INVALID_ARGUMENT beside its field
violations): one
status code covers refusals a client must tell apart (a stale version it can re-read past, a run
another runner claimed), and a client in Go, Node or Java could tell them only by their English.
Decoded here as such a client does: ``grpc-status-details-bin`` from a real server's trailers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from stigmer_core import Application, errors, from_rpc_error
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.ids import new_id
from stigmer_core.kind_client import KindClient
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.status import MAX_DETAILS_BYTES, to_status
from stigmer_core.store.retention import EventRetention
from tests.agent_execution_support import IN_PROGRESS, Kinds
from tests.auth_support import ALPHA, make_token, served, with_token

ABORTED = grpc.StatusCode.ABORTED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@attrs.frozen
class Daemon:
    app: Application
    address: str
    admin: str  # an admin token of ALPHA

    def channel(self, token: str | None = None) -> grpc.Channel:
        plain = grpc.insecure_channel(self.address)
        return with_token(plain, self.admin if token is None else token)

    def kinds(self, token: str | None = None) -> Kinds:
        return Kinds.on(self.app, self.channel(token))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A team server's daemon: tokens required, two streams at most, 50 revisions of events kept."""
    app = Application.open(
        tmp_path / "data",
        durable=False,
        require_auth=True,
        streams=StreamSettings(max_streams=2, poll_seconds=0.2),
        retention=EventRetention(max_revisions=50),
    )
    try:
        admin, _ = make_token(app, ALPHA, "admin", "operator")
        with served(app) as server:
            yield Daemon(app, server.address, admin)
    finally:
        app.close()


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    """The status code and the ErrorInfo of a refused call, read from its trailers as any client would."""
    try:
        got = call()
        if isinstance(got, Iterator):
            next(got)
    except grpc.RpcError as exc:
        trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == exc.code().value[0]  # type: ignore[attr-defined]
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        assert len(infos) == 1, status
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.domain == "stigmer.ai"
        return exc.code(), info  # type: ignore[attr-defined]
    raise AssertionError(f"expected a refusal, got {got}")


def _agent(name: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata={"name": name})


def _claim(kinds: Kinds, run: Any, runner: str, version: int = 0) -> Any:
    request = ae.AgentExecutionUpdateStatusInput(
        execution_id=run.metadata.id,
        resource_version=version,
        status=ae.AgentExecutionStatus(phase=IN_PROGRESS, runner=runner),  # type: ignore[arg-type]
    )
    return kinds.executions.call("updateStatus", request)


def test_not_found_and_already_exists_name_the_kind_and_object(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    agent = kinds.agents.create(_agent("named"))
    code, info = refusal(lambda: kinds.agents.create(_agent("named")))
    assert (code, info.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    assert dict(info.metadata) == {"kind": "Agent", "slug": "named", "org": ALPHA}
    kinds.agents.delete(agent.metadata.id)
    code, info = refusal(lambda: kinds.agents.get(agent.metadata.id))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert dict(info.metadata) == {"kind": "Agent", "id": agent.metadata.id}


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    trailers = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert sum(d.Unpack(bad) for d in status.details if d.Is(bad.DESCRIPTOR)) == 1, status
    return [(v.field, v.description) for v in bad.field_violations]


def test_a_request_breaking_a_rule_names_its_reason_beside_its_fields(daemon: Daemon) -> None:
    """An INVALID_ARGUMENT carried field violations only: a client matching every refusal's
    reason read "" for it, and a bad header carried a reason and no violation."""
    kinds = daemon.kinds()
    bad = _agent("labelled")
    bad.metadata.labels["-bad"] = "x"
    code, info = refusal(lambda: kinds.agents.create(bad))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as err:
        kinds.agents.create(bad)
    assert [field for field, _ in _violations(err.value)] == ['metadata.labels["-bad"]']
    create = daemon.channel().unary_unary(
        "/stigmer.agentic.agent.v1.AgentCommandController/create",
        request_serializer=agent_pb2.Agent.SerializeToString,
        response_deserializer=agent_pb2.Agent.FromString,
    )
    asked = (("stigmer-dry-run", "maybe"),)
    code, info = refusal(lambda: create(_agent("rehearsed"), metadata=asked, timeout=10))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as err:
        create(_agent("rehearsed"), metadata=asked, timeout=10)
    assert _violations(err.value) == [("stigmer-dry-run", "'maybe' is not true or false")]
    assert from_rpc_error(err.value).violations[0].field == "stigmer-dry-run"


def test_a_reference_naming_nothing_names_its_field(daemon: Daemon) -> None:
    """A kind's own check of a reference (a session's instance, an execution's agent or session)
    said the field only in its English message: a client in another language could not tell
    which reference was wrong without parsing it."""
    kinds = daemon.kinds()
    missing = {"Agent": new_id("agt"), "AgentInstance": new_id("ain"), "Session": new_id("ses")}
    code, info = refusal(lambda: kinds.session(missing["AgentInstance"]))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert dict(info.metadata) == {"kind": "AgentInstance", "id": missing["AgentInstance"], "field": "spec.agent_instance_id"}
    code, info = refusal(lambda: kinds.execution(agent_id=missing["Agent"]))
    assert dict(info.metadata) == {"kind": "Agent", "id": missing["Agent"], "field": "spec.agent_id"}
    run = ae.AgentExecution(metadata={"name": "lost"})
    run.spec.session_id, run.spec.message = missing["Session"], "hello"
    code, info = refusal(lambda: kinds.executions.create(run))
    assert dict(info.metadata) == {"kind": "Session", "id": missing["Session"], "field": "spec.session_id"}
    owned = _agent("owned")
    owned.metadata.owner_references.add(kind="Agent", id=missing["Agent"])
    code, info = refusal(lambda: kinds.agents.create(owned))
    assert dict(info.metadata) == {"kind": "Agent", "id": missing["Agent"], "field": "metadata.owner_references[0]"}


def test_a_stale_version_says_which_version_is_current(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    agent = kinds.agents.create(_agent("edited"))
    changed = agent_pb2.Agent()
    changed.CopyFrom(agent)
    changed.spec.description = "first"
    current = kinds.agents.update(changed)
    changed.spec.description = "second"
    code, info = refusal(lambda: kinds.agents.update(changed))
    assert (code, info.reason) == (ABORTED, "STALE_VERSION")
    assert dict(info.metadata) == {
        "kind": "Agent",
        "id": agent.metadata.id,
        "resourceVersion": str(agent.metadata.resource_version),
        "currentResourceVersion": str(current.metadata.resource_version),
    }
    changed.metadata.resource_version = current.metadata.resource_version + 100
    code, info = refusal(lambda: kinds.agents.update(changed))
    assert (code, info.reason) == (ABORTED, "VERSION_NOT_ISSUED")


def test_a_run_claimed_held_or_ended_is_refused_with_a_reason_naming_it(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    agent = kinds.agents.create(_agent("worker"))
    run = kinds.execution(agent_id=agent.metadata.id)
    version = run.metadata.resource_version
    _claim(kinds, run, "host-a:1", version)
    code, info = refusal(lambda: _claim(kinds, run, "host-b:2", version))
    assert (code, info.reason) == (ABORTED, "RUN_CLAIMED")
    assert info.metadata["runner"] == "host-a:1" and info.metadata["id"] == run.metadata.id
    assert info.metadata["kind"] == "AgentExecution" and info.metadata["resourceVersion"] == str(version)
    code, info = refusal(lambda: _claim(kinds, run, "host-b:2"))  # unguarded: held, its lease not run out
    assert (code, info.reason) == (FAILED_PRECONDITION, "RUN_HELD_BY_ANOTHER_RUNNER")
    assert info.metadata["runner"] == "host-a:1" and int(info.metadata["leaseSeconds"]) > 0
    kinds.cancel(run.metadata.id, "not needed")
    code, info = refusal(lambda: _claim(kinds, run, "host-a:1"))
    assert (code, info.reason) == (FAILED_PRECONDITION, "RUN_ENDED")
    assert info.metadata["phase"] == "EXECUTION_CANCELLED"


def test_a_watch_from_a_compacted_revision_is_told_so(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    first = kinds.agents.create(_agent("first"))
    for i in range(60):  # the log keeps 50 revisions
        kinds.agents.create(_agent(f"n{i}"))
    watch = watch_pb2_grpc.WatchStub(daemon.channel())
    since = first.metadata.resource_version
    code, info = refusal(lambda: watch.Watch(watch_pb2.WatchRequest(kind="Agent", since_revision=since), timeout=30))
    assert (code, info.reason) == (ABORTED, "EVENTS_COMPACTED")
    assert info.metadata["sinceRevision"] == str(since) and int(info.metadata["oldestRevision"]) > since


def test_a_subscribe_from_a_compacted_revision_names_it_as_its_request_did(daemon: Daemon) -> None:
    """A subscribe's cursor is ``after_revision``: its refusals give it back as ``afterRevision``,
    not under a watch's name, so a runner reads back the field it sent."""
    kinds = daemon.kinds()
    run = kinds.execution(agent_id=kinds.agent().metadata.id)
    after = run.metadata.resource_version
    kinds.report(run.metadata.id, IN_PROGRESS, "started")  # changed since ``after``
    for i in range(60):  # the log keeps 50 revisions
        kinds.agents.create(_agent(f"n{i}"))
    subscribe = ae.SubscribeAgentExecutionInput(execution_id=run.metadata.id, after_revision=after)
    code, info = refusal(lambda: kinds.executions.call("subscribe", subscribe))
    assert (code, info.reason) == (ABORTED, "EVENTS_COMPACTED")
    assert info.metadata["afterRevision"] == str(after) and "sinceRevision" not in info.metadata
    assert int(info.metadata["oldestRevision"]) > after


def test_a_resume_ahead_of_the_store_and_a_refused_page_token_name_their_reasons(daemon: Daemon) -> None:
    """Both were INVALID_ARGUMENT told apart only by their English: a runner resuming on a store
    restored behind it must start over (as on EVENTS_COMPACTED), a client with a refused page
    token must list from the first page, and neither could tell so without parsing."""
    kinds = daemon.kinds()
    run = kinds.execution(agent_id=kinds.agent().metadata.id)
    ahead = run.metadata.resource_version + 1000
    watch = watch_pb2_grpc.WatchStub(daemon.channel())
    code, info = refusal(lambda: watch.Watch(watch_pb2.WatchRequest(kind="Agent", since_revision=ahead), timeout=30))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REVISION_AHEAD")
    assert info.metadata["sinceRevision"] == str(ahead) and int(info.metadata["storeRevision"]) < ahead
    subscribe = ae.SubscribeAgentExecutionInput(execution_id=run.metadata.id, after_revision=ahead)
    code, info = refusal(lambda: kinds.executions.call("subscribe", subscribe))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REVISION_AHEAD")
    assert info.metadata["afterRevision"] == str(ahead)
    for n in range(3):
        kinds.agents.create(_agent(f"paged {n}"))
    page = kinds.agents.list_page(page_size=1)
    edited = page.next_page_token[:-2] + ("AA" if not page.next_page_token.endswith("AA") else "BB")
    code, info = refusal(lambda: kinds.agents.list_page(page_size=1, page_token=edited))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


def test_a_caller_without_the_right_or_a_token_is_told_which(daemon: Daemon) -> None:
    viewer, _ = make_token(daemon.app, ALPHA, "viewer", "reader")
    code, info = refusal(lambda: daemon.kinds(viewer).agents.create(_agent("no")))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert info.metadata["access"] == "write"
    assert info.metadata["method"] == "/stigmer.agentic.agent.v1.AgentCommandController/create"
    assert info.metadata["kind"] == "Agent"
    # the one Watch method serves every kind: the refusal names the kind the caller may not watch
    editor, _ = make_token(daemon.app, ALPHA, "editor", "writer")
    watch = watch_pb2_grpc.WatchStub(daemon.channel(editor))
    code, info = refusal(lambda: watch.Watch(watch_pb2.WatchRequest(kind="ApiToken", org=ALPHA), timeout=10))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert (info.metadata["kind"], info.metadata["access"]) == ("ApiToken", "admin"), info.metadata
    anonymous = Kinds.on(daemon.app, grpc.insecure_channel(daemon.address))
    code, info = refusal(lambda: anonymous.agents.create(_agent("no")))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REQUIRED")
    code, info = refusal(lambda: daemon.kinds("stg_" + "x" * 43).agents.create(_agent("no")))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    code, info = refusal(lambda: daemon.kinds("not-a-token").agents.create(_agent("no")))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED")


def test_a_stream_past_the_limit_names_the_setting(daemon: Daemon) -> None:
    watch = watch_pb2_grpc.WatchStub(daemon.channel())
    held = [watch.Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=60) for _ in range(2)]
    for stream in held:
        next(stream)  # admitted: the first bookmark
    code, info = refusal(lambda: watch.Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=30))
    assert (code, info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAM_LIMIT")
    assert dict(info.metadata) == {"limit": "2", "setting": "STIGMER_MAX_STREAMS"}
    for stream in held:
        stream.cancel()


def test_the_in_process_channel_carries_the_same_details(daemon: Daemon) -> None:
    network = daemon.kinds()
    agent = network.agents.create(_agent("both"))
    local = Kinds.on(daemon.app, daemon.app.channel())
    stale = agent_pb2.Agent()
    stale.CopyFrom(agent)
    stale.spec.description = "moved on"
    network.agents.update(stale)
    over_network = refusal(lambda: network.agents.update(stale))
    in_process = refusal(lambda: local.agents.update(stale))
    assert over_network == in_process
    try:
        local.agents.update(stale)
    except grpc.RpcError as exc:
        restored = from_rpc_error(exc)
    assert isinstance(restored, errors.Conflict) and restored.reason == "STALE_VERSION"
    assert restored.metadata == dict(in_process[1].metadata)


def test_the_details_stay_within_their_cap_with_the_longest_message_and_metadata() -> None:
    big = errors.FailedPrecondition(
        "é" * 5000, reason="RUN_ENDED", metadata={f"key{i:02d}-{'k' * 300}": "v" * 5000 for i in range(40)}
    )
    found = to_status(big)
    details = dict(found.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) <= MAX_DETAILS_BYTES
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "RUN_ENDED"
    assert 0 < len(info.metadata) <= 16


def test_reports_refused_for_who_sends_them_or_what_they_ask_name_why(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    agent = kinds.agents.create(_agent("worker"))
    run = kinds.execution(agent_id=agent.metadata.id)
    bare = ae.AgentExecutionUpdateStatusInput(execution_id=run.metadata.id, status={"runner": "host-a:1"})
    code, info = refusal(lambda: kinds.executions.call("updateStatus", bare))  # a runner's name, no claim
    assert (code, info.reason) == (FAILED_PRECONDITION, "RUN_NOT_CLAIMED")
    code, info = refusal(lambda: kinds.report(run.metadata.id, 3))  # PENDING to COMPLETED
    assert (code, info.reason) == (FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert (info.metadata["phase"], info.metadata["requestedPhase"]) == ("EXECUTION_PENDING", "EXECUTION_COMPLETED")
    _claim(kinds, run, "host-a:1")
    code, info = refusal(lambda: kinds.report(run.metadata.id, IN_PROGRESS, "no runner named"))
    assert (code, info.reason) == (FAILED_PRECONDITION, "RUNNER_REQUIRED")
    assert info.metadata["runner"] == "host-a:1"
    other, _ = make_token(daemon.app, ALPHA, "runner", "other-runner")
    code, info = refusal(lambda: _claim(daemon.kinds(other), run, "host-a:1"))  # the name, not the token
    assert (code, info.reason) == (FAILED_PRECONDITION, "RUN_HELD_BY_ANOTHER_TOKEN")
    assert info.metadata["claimedBy"] == f"token:{ALPHA}/operator"


def test_an_org_out_of_reach_and_a_revoked_token_are_told_apart(daemon: Daemon) -> None:
    kinds = daemon.kinds()
    code, info = refusal(lambda: kinds.agents.create(agent_pb2.Agent(metadata={"name": "x", "org": "beta"})))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "ORG_NOT_FOUND")
    assert dict(info.metadata) == {"org": "beta"}
    token, made = make_token(daemon.app, ALPHA, "viewer", "leaked")
    tokens = KindClient(daemon.channel(), daemon.app.registry.kind("ApiToken"))
    tokens.call("revoke", apitoken_pb2.ApiTokenId(value=made.metadata.id))
    code, info = refusal(lambda: daemon.kinds(token).agents.get(made.metadata.id))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


def test_an_asyncio_clients_refusal_is_read_back_whole(daemon: Daemon) -> None:
    """``from_rpc_error`` took a sync call only: a ``grpc.aio`` error (no ``grpc.Call``) came back
    as a bare StigmerError, reason ERROR, no metadata and the error's repr for its message."""
    import asyncio

    from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc

    missing = new_id("agt")
    metadata = (("authorization", f"Bearer {daemon.admin}"),)

    async def refusals() -> list[grpc.RpcError]:
        found: list[grpc.RpcError] = []
        async with grpc.aio.insecure_channel(daemon.address) as channel:
            queries = agent_grpc.AgentQueryControllerStub(channel)
            commands = agent_grpc.AgentCommandControllerStub(channel)
            for call in (
                lambda: queries.get(agent_pb2.AgentId(value=missing), metadata=metadata, timeout=10),
                lambda: commands.create(agent_pb2.Agent(metadata={"name": ""}), metadata=metadata, timeout=10),
                lambda: commands.create(_agent_in("x", "beta"), metadata=metadata, timeout=10),
            ):
                try:
                    await call()
                except grpc.RpcError as exc:
                    found.append(exc)
        return found

    not_found, invalid, elsewhere = (from_rpc_error(e) for e in asyncio.run(refusals()))
    assert type(not_found) is errors.NotFound
    assert (not_found.reason, not_found.metadata) == ("NOT_FOUND", {"kind": "Agent", "id": missing})
    assert not_found.message.startswith("agent '") and "AioRpcError" not in not_found.message, not_found.message
    assert isinstance(invalid, errors.InvalidArgument) and invalid.violations, invalid
    assert type(elsewhere) is errors.OrgNotVisible and elsewhere.metadata == {"org": "beta"}


def _agent_in(name: str, org: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata={"name": name, "org": org})


def test_an_id_another_org_holds_is_refused_with_its_own_reason(daemon: Daemon) -> None:
    """NOT_FOUND for an id another org holds and NOT_FOUND for an id nothing holds had one reason:
    a client (the CLI's import) could tell them apart only by the words."""
    from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc

    commands = agent_grpc.AgentCommandControllerStub(daemon.app.channel())
    taken = commands.create(_agent_in("held", "beta"))  # the local administrator, in another org
    kinds = daemon.kinds()
    again = agent_pb2.Agent(metadata={"name": "mine", "id": taken.metadata.id})
    code, info = refusal(lambda: kinds.agents.create(again))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "ID_TAKEN")
    assert info.metadata["id"] == taken.metadata.id and info.metadata["org"] == ALPHA
    code, info = refusal(lambda: kinds.agents.get(new_id("agt")))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_control_characters_a_request_named_are_escaped_in_what_is_told() -> None:
    """A message echoing a request's id (``session 'blue\\x00' not found``) passed a NUL, or a
    terminal's escape sequence, on to the client's terminal and log as it came."""
    told = to_status(errors.NotFound("session 'blue\x00\x1b[31m' not found"))
    assert told.details == "session 'blue\\x00\\x1b[31m' not found"
    assert to_status(errors.NotFound("agent 'ünï ✓' not found")).details == "agent 'ünï ✓' not found"
    bad = to_status(errors.InvalidArgument.field("spec.name", "holds \x07"))
    assert "\x07" not in bad.details and "\\x07" in bad.details
