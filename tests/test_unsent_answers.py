"""Answers a member's client does not read are bounded, per member and per daemon.

grpc keeps a unary call's answer until the client's flow control lets it out. A client that
reads nothing (one raw socket, a viewer's token) kept every answer it asked for: 150 list pages
of 2.5 MB held 670 MB of a team daemon for as long as its socket stayed open. Now a member's
calls are refused RESOURCE_EXHAUSTED (UNSENT_ANSWER_LIMIT) while its unread answers reach
``STIGMER_MAX_UNSENT_BYTES_PER_CALLER``; other members are served, and the member is served
again once its answers are read or its connection is gone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, errors, from_rpc_error
from stigmer_core.accounts import Account
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.server import PoolSizes, Server
from stigmer_core.server_pools import PoolSizes as Sizes
from stigmer_core.unsent_answers import PER_CALLER_ENV, PER_ORG_ENV, REASON, UnsentAnswers
from tests.auth_support import ALPHA, BETA, make_token
from tests.held_streams import HeldStreams

GET = "/stigmer.agentic.agent.v1.AgentQueryController/get"
WAIT = 60.0
"""How long a test waits for what must come; never a measure of speed."""
ANSWER = 200_000
"""About the bytes of each agent's answer."""
SHARE = 5 * ANSWER
RESOURCE_EXHAUSTED = "8"


@pytest.fixture(params=[0, 2], ids=["asyncio", "sync"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Application, Server]]:
    sizes = PoolSizes(read_threads=request.param, unsent_bytes_per_caller=SHARE)
    with Application.open(tmp_path / "data", durable=False, require_auth=True) as app:
        server = Server(app, "127.0.0.1:0", pools=sizes)
        server.start()
        try:
            yield app, server
        finally:
            server.stop(grace=1)


def _big_agent(app: Application, name: str) -> str:
    made = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=ALPHA))
    made.spec.instructions = "x" * ANSWER
    return str(agent_grpc.AgentCommandControllerStub(app.channel()).create(made).metadata.id)


def test_a_member_whose_client_reads_nothing_is_refused_and_others_are_served(
    served: tuple[Application, Server],
) -> None:
    app, server = served
    reader, _ = make_token(app, ALPHA, "viewer", "reads nothing")
    other, _ = make_token(app, ALPHA, "viewer", "reads")
    agent_id = _big_agent(app, "big")
    request = agent_pb2.AgentId(value=agent_id).SerializeToString()
    bearer = [("authorization", f"Bearer {reader}")]
    with HeldStreams(server.address, GET, 20, bearer, message=request) as held:
        ended = held.wait_ended(20 - (SHARE // ANSWER + 1), WAIT)  # the refused end at once: a status needs no window
        refused = [why for code, why in ended.values() if code == RESOURCE_EXHAUSTED]
        # at most the share's worth of answers held, one more for the one that reached it: calls
        # admitted together each passed the check, and their 13 answers were held (2.6 MB against
        # a 1 MB share), before a read's answer was checked again as it was counted
        assert len(refused) >= 20 - (SHARE // ANSWER + 1), ended
        assert PER_CALLER_ENV in refused[0].replace("%20", " "), refused[0]
        with grpc.insecure_channel(server.address) as channel:
            gets = agent_grpc.AgentQueryControllerStub(channel).get
            answer = gets(
                agent_pb2.AgentId(value=agent_id), metadata=[("authorization", f"Bearer {other}")], timeout=WAIT
            )
            assert answer.metadata.id == agent_id
            with pytest.raises(grpc.RpcError) as caught:
                gets(agent_pb2.AgentId(value=agent_id), metadata=bearer, timeout=WAIT)
            assert from_rpc_error(caught.value).reason == REASON
    with grpc.insecure_channel(server.address) as channel:  # its connection gone, its answers went with it
        gets = agent_grpc.AgentQueryControllerStub(channel).get
        waited_until = time.monotonic() + WAIT
        while True:
            try:
                assert gets(agent_pb2.AgentId(value=agent_id), metadata=bearer, timeout=WAIT).metadata.id == agent_id
                break
            except grpc.RpcError:
                assert time.monotonic() < waited_until, "the member's share never came back"
                time.sleep(0.05)


def test_the_bound_counts_each_answer_once_until_it_is_released() -> None:
    answers = UnsentAnswers(per_caller=100, total=150)
    a, b = Account("a", (ALPHA,)), Account("b", (BETA,))
    first = answers.hold(a, 60)
    answers.check(a)  # 60 of 100
    second = answers.hold(a, 60)
    with pytest.raises(errors.ResourceExhausted, match=PER_CALLER_ENV):
        answers.check(a)
    answers.check(b)  # 120 of the daemon's 150
    third = answers.hold(b, 40)
    with pytest.raises(errors.ResourceExhausted, match="STIGMER_MAX_UNSENT_BYTES"):
        answers.check(b)
    for release in (first, first, second, third):  # a second release of one answer changes nothing
        release()
    assert (answers.held("a"), answers.held("b"), answers.held_by_org(ALPHA)) == (0, 0, 0)
    answers.check(a)


def test_an_empty_answer_released_after_a_larger_one_of_its_caller_is_no_error() -> None:
    """An empty answer (an empty list page) counted 0 bytes; a larger answer's release took the
    count to 0 and dropped it, and the empty one's release then raised KeyError, logged at ERROR
    by grpc for every such call (a runner's list of its runs in flight, most often empty)."""
    answers = UnsentAnswers(per_caller=100, total=1000, per_org=150)
    a = Account("a", (ALPHA,))
    empty, larger = answers.hold(a, 0), answers.hold(a, 100)
    larger()
    empty()
    assert (answers.held("a"), answers.held_by_org(ALPHA)) == (0, 0)
    answers.check(a)


def test_the_callers_of_one_org_together_hold_at_most_the_orgs_share() -> None:
    answers = UnsentAnswers(per_caller=100, total=1000, per_org=150)
    one, two, other = Account("one", (ALPHA,)), Account("two", (ALPHA,)), Account("other", (BETA,))
    held = [answers.hold(one, 90), answers.hold(two, 90)]  # each within its own share
    with pytest.raises(errors.ResourceExhausted, match=PER_ORG_ENV) as caught:
        answers.check(Account("three", (ALPHA,)))
    assert (caught.value.metadata["org"], caught.value.metadata["limit"]) == (ALPHA, "150")
    answers.check(other)
    for release in held:
        release()
    assert answers.held_by_org(ALPHA) == 0
    answers.check(one)


@pytest.mark.parametrize("read_threads", [0, 2], ids=["asyncio", "sync"])
def test_an_orgs_members_reading_nothing_leave_other_orgs_served(tmp_path: Path, read_threads: int) -> None:
    """Each token kept to its own share, an org's admin could make tokens enough to hold every
    answer the daemon may: the callers of one org together hold at most
    ``STIGMER_MAX_UNSENT_BYTES_PER_ORG``, and past it the org's members are refused, not others."""
    sizes = PoolSizes(read_threads=read_threads, unsent_bytes_per_caller=SHARE, unsent_bytes_per_org=4 * ANSWER)
    with Application.open(tmp_path / "data", durable=False, require_auth=True) as app:
        server = Server(app, "127.0.0.1:0", pools=sizes)
        server.start()
        try:
            reader, _ = make_token(app, ALPHA, "viewer", "reads nothing")
            colleague, _ = make_token(app, ALPHA, "viewer", "colleague")
            outsider, _ = make_token(app, BETA, "viewer", "another org")
            agent_id = _big_agent(app, "big")
            elsewhere = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="elsewhere", org=BETA))
            beta_id = agent_grpc.AgentCommandControllerStub(app.channel()).create(elsewhere).metadata.id
            request = agent_pb2.AgentId(value=agent_id).SerializeToString()
            with (
                HeldStreams(server.address, GET, 20, _bearer(reader), message=request) as held,
                grpc.insecure_channel(server.address) as channel,
            ):
                assert len(held.wait_ended(10, WAIT)) >= 10  # past the org's share: refused at once
                gets = agent_grpc.AgentQueryControllerStub(channel).get
                with pytest.raises(grpc.RpcError) as caught:
                    gets(agent_pb2.AgentId(value=agent_id), metadata=_bearer(colleague), timeout=WAIT)
                refusal = from_rpc_error(caught.value)
                assert (refusal.reason, refusal.metadata["setting"], refusal.metadata["org"]) == (
                    REASON,
                    PER_ORG_ENV,
                    ALPHA,
                )
                answer = gets(agent_pb2.AgentId(value=beta_id), metadata=_bearer(outsider), timeout=WAIT)
                assert answer.metadata.name == "elsewhere"
        finally:
            server.stop(grace=1)


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_the_bounds_come_from_the_environment() -> None:
    sizes = Sizes.from_env({PER_CALLER_ENV: "1000", "STIGMER_MAX_UNSENT_BYTES": "5000", PER_ORG_ENV: "3000"})
    assert (sizes.unsent_bytes_per_caller, sizes.unsent_bytes, sizes.unsent_bytes_per_org) == (1000, 5000, 3000)


def test_answers_of_reads_admitted_together_are_held_to_the_share() -> None:
    """Calls admitted at one moment each pass the check before any answer is counted; their
    answers then went past the share together (13 of 200 kB held against 1 MB). A read's answer
    is checked again as it is counted, a write's never: its change is made."""

    answers = UnsentAnswers(per_caller=SHARE, total=100 * SHARE)
    answers.reads = frozenset({GET})
    account = Account("token:alpha/burst", (ALPHA,))
    for _ in range(20):
        answers.check(account)  # every one admitted: nothing is counted yet
    held, refused = 0, 0
    for _ in range(20):
        try:
            answers.hold(account, ANSWER, GET)
            held += 1
        except errors.ResourceExhausted as exc:
            assert exc.reason == REASON and PER_CALLER_ENV in exc.message
            refused += 1
    assert (held, refused) == (SHARE // ANSWER, 20 - SHARE // ANSWER)
    answers.hold(account, ANSWER, "/stigmer.agentic.agent.v1.AgentCommandController/create")  # a write's: sent
    assert answers.held(account.principal) == SHARE + ANSWER
