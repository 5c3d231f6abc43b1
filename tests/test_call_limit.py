"""One member's token holds at most a share of a team server's threads with calls that send nothing.

On grpc's sync server (a PostgreSQL store) a unary call takes a pool thread
when its headers arrive, and waits on it for its message. A member with a
valid token, a viewer's say, could open calls whose message never comes and
hold every read and rpc thread for ``STIGMER_REQUEST_READ_TIMEOUT`` at a time,
again and again, while every other member's calls queued. Now each principal
has at most ``STIGMER_MAX_UNREAD_CALLS_PER_CALLER`` calls of each pool waiting
for their message (half of it by default); its next call is refused
RESOURCE_EXHAUSTED (UNREAD_CALL_LIMIT) before anything waits for its message,
and every slot comes back however the wait ended. A client whose messages come
with their headers, as every grpc client's do, is never refused, however many
calls it has in flight.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, errors, status
from stigmer_core.accounts import Account
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.call_limit import ENV, GRACE_ENV, ORG_ENV, REASON, CallLimit
from stigmer_core.errors import StartupError
from stigmer_core.grpc_servers import AsyncServing, SyncServing
from stigmer_core.request_read import ReadDeadlines
from stigmer_core.server import PoolSizes, Server
from tests.auth_support import ALPHA, BETA, make_token
from tests.held_streams import HeldStreams

GET = "/stigmer.agentic.agent.v1.AgentQueryController/get"
CREATE = "/stigmer.agentic.agent.v1.AgentCommandController/create"
WATCH = "/stigmer.commons.watch.v1.Watch/Watch"
WAIT = 60.0
"""How long a test waits for an answer it must get; never a measure of speed."""
READ_THREADS, RPC_THREADS = 4, 8
READ_SHARE, RPC_SHARE = READ_THREADS // 2, RPC_THREADS // 2
READ_ORG_SHARE = 3 * READ_THREADS // 4
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = "4", "8"


class Team:
    """A daemon on PostgreSQL requiring tokens, with a viewer (who holds calls) and an editor."""

    def __init__(self, app: Application, server: Server) -> None:
        self.app, self.server = app, server
        self.viewer, made = make_token(app, ALPHA, "viewer", "holder")
        self.viewer_principal = f"token:{ALPHA}/{made.metadata.slug}"
        self.editor, made_editor = make_token(app, ALPHA, "editor", "other member")
        self.editor_principal = f"token:{ALPHA}/{made_editor.metadata.slug}"
        self.channel = grpc.insecure_channel(server.address)
        self._waiter = futures.ThreadPoolExecutor(2)

    def bearer(self, token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    def answer(self, call: Callable[[], Any]) -> Any:
        """``call``'s result, waited for at most ``WAIT``: a call queued behind held threads fails."""
        return self._waiter.submit(call).result(WAIT)

    def create(self, token: str, name: str) -> agent_pb2.Agent:
        agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=ALPHA))
        stub = agent_grpc.AgentCommandControllerStub(self.channel)
        return stub.create(agent, metadata=self.bearer(token), timeout=WAIT)

    def get(self, token: str, agent_id: str) -> agent_pb2.Agent:
        stub = agent_grpc.AgentQueryControllerStub(self.channel)
        return stub.get(agent_pb2.AgentId(value=agent_id), metadata=self.bearer(token), timeout=WAIT)

    def held(self, principal: str) -> int:
        """Threads ``principal``'s calls hold now, over both pools."""
        serving = self.server._serving
        assert isinstance(serving, SyncServing)
        return sum(limit.held(principal) for limit in serving._limits.values())

    def until_none_held(self, principal: str) -> None:
        """Waits for a call ended from outside (its client gone, its read timed out) to give its
        slot back: its status reaches the client before its thread has returned."""
        waited_until = time.monotonic() + WAIT
        while self.held(principal) and time.monotonic() < waited_until:
            time.sleep(0.01)
        assert self.held(principal) == 0

    def close(self) -> None:
        self.channel.close()
        self._waiter.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def team(data: Path, store_url: str, read_seconds: float) -> Iterator[Team]:
    sizes = PoolSizes(read_threads=READ_THREADS, rpc_threads=RPC_THREADS, request_read_seconds=read_seconds)
    with _serving(Application.open(data, store=store_url, durable=False, require_auth=True), sizes, Team) as made:
        assert not made.server.asynchronous
        yield made


@contextlib.contextmanager
def _serving(app: Application, sizes: PoolSizes, team_class: type[Team]) -> Iterator[Team]:
    server = Server(app, "127.0.0.1:0", pools=sizes)
    made: Team | None = None
    try:
        server.start()
        made = team_class(app, server)
        yield made
    finally:
        if made is not None:
            made.close()
        server.stop(grace=1)
        app.close()


def burst(t: Team, in_flight: int) -> list[Any]:
    """An editor's ``in_flight`` gets of one agent and as many creates, all sent at once on one channel."""
    made = t.create(t.editor, "read-by-many")
    gets = agent_grpc.AgentQueryControllerStub(t.channel).get
    creates = agent_grpc.AgentCommandControllerStub(t.channel).create
    bearer = t.bearer(t.editor)
    return [
        gets.future(agent_pb2.AgentId(value=made.metadata.id), metadata=bearer, timeout=WAIT) for _ in range(in_flight)
    ] + [
        creates.future(
            agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=f"burst-{i}", org=ALPHA)),
            metadata=bearer,
            timeout=WAIT,
        )
        for i in range(in_flight)
    ]


def refused(call: Callable[[], object]) -> errors.StigmerError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return status.from_rpc_error(caught.value)


def test_a_member_holding_its_share_is_refused_at_once_and_others_are_answered(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    # Ten seconds to send a message: only the bound keeps these from holding every thread.
    with team(tmp_path / "data", stigmer_postgres_store_url, 10) as t:
        bearer = t.bearer(t.viewer)
        # As many as each pool has threads: unbounded, they would take them all.
        holders = [
            HeldStreams(t.server.address, GET, READ_THREADS, bearer),
            HeldStreams(t.server.address, CREATE, RPC_THREADS, bearer),
        ]
        try:
            for held, share in zip(holders, (READ_SHARE, RPC_SHARE), strict=True):
                # those past the share are refused before their message is read; the rest wait
                ended = held.wait_ended(len(held.ids) - share, WAIT)
                assert len(ended) == len(held.ids) - share
                assert all(code == RESOURCE_EXHAUSTED and ENV in message for code, message in ended.values())

            read_refusal = refused(lambda: t.get(t.viewer, "agt_missing"))
            assert isinstance(read_refusal, errors.ResourceExhausted)
            assert (read_refusal.reason, read_refusal.metadata) == (
                REASON,
                {"limit": str(READ_SHARE), "setting": ENV, "principal": t.viewer_principal},
            )
            write_refusal = refused(lambda: t.create(t.viewer, "not-even-checked"))
            assert isinstance(write_refusal, errors.ResourceExhausted)
            assert (write_refusal.reason, write_refusal.metadata["limit"]) == (REASON, str(RPC_SHARE))

            made = t.answer(lambda: t.create(t.editor, "still-served"))
            assert t.answer(lambda: t.get(t.editor, made.metadata.id)).metadata.name == "still-served"
            # every held call counts: those still waiting, and those ended past the share
            assert t.held(t.viewer_principal) == READ_THREADS + RPC_THREADS
        finally:
            for held in holders:
                held.close()
        # Their client gone, the held calls end without their message, and count for the read
        # timeout more before the viewer's calls are served again.
        t.until_none_held(t.viewer_principal)
        assert t.get(t.viewer, made.metadata.id).metadata.name == "still-served"


def test_a_client_with_many_calls_in_flight_is_not_refused(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    # Eight times each pool's threads in flight at once, from one token: their messages come with
    # their headers, so none waits for one and none counts against the share.
    in_flight = 8 * RPC_THREADS
    with team(tmp_path / "data", stigmer_postgres_store_url, 3600) as t:
        calls = burst(t, in_flight)
        codes = [call.code() for call in calls]
        assert codes == [grpc.StatusCode.OK] * len(calls)
        assert {call.result().metadata.name for call in calls[:in_flight]} == {"read-by-many"}
        assert t.held(t.editor_principal) == 0


def test_calls_reset_before_their_grace_still_count(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    """A caller resetting each call that sends nothing just before it would count held the
    threads as surely as one that never reset them, and was never refused."""
    with team(tmp_path / "data", stigmer_postgres_store_url, 3) as t:
        bearer = t.bearer(t.viewer)
        with HeldStreams(t.server.address, GET, READ_SHARE, bearer):
            time.sleep(0.3)  # on their threads, past the strike and short of the 1 s grace
        # the connection is gone: each call ends without its message, and counts
        waited_until = time.monotonic() + WAIT
        while t.held(t.viewer_principal) < READ_SHARE and time.monotonic() < waited_until:
            time.sleep(0.01)
        refusal = refused(lambda: t.get(t.viewer, "agt_missing"))
        assert isinstance(refusal, errors.ResourceExhausted) and refusal.reason == REASON
        made = t.answer(lambda: t.create(t.editor, "served-meanwhile"))
        t.until_none_held(t.viewer_principal)  # for the read timeout, then the viewer is served
        assert t.get(t.viewer, made.metadata.id).metadata.name == "served-meanwhile"


def test_a_call_started_while_the_watcher_sleeps_counts_at_its_grace(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """The watcher slept until the nearest read deadline (an hour here), so calls that started
    after it went to sleep were counted only then, and held every thread meanwhile."""
    with team(tmp_path / "data", stigmer_postgres_store_url, 3600) as t:
        bearer = t.bearer(t.viewer)
        with HeldStreams(t.server.address, GET, 1, bearer):
            waited_until = time.monotonic() + WAIT
            while t.held(t.viewer_principal) < 1 and time.monotonic() < waited_until:
                time.sleep(0.05)
            assert t.held(t.viewer_principal) == 1  # counted at its grace; the watcher sleeps on
            with HeldStreams(t.server.address, GET, READ_THREADS - 1, bearer) as more:
                ended = more.wait_ended(READ_THREADS - READ_SHARE, WAIT)
                assert len(ended) == READ_THREADS - READ_SHARE
                assert {code for code, _ in ended.values()} == {RESOURCE_EXHAUSTED}


def test_streams_that_send_nothing_hold_at_most_a_share_of_the_stream_threads(
    tmp_path: Path, stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch's headers with no message held a stream thread for the read timeout, counted by
    no bound: the streams' own are counted once the message is read."""
    monkeypatch.setenv("STIGMER_MAX_STREAMS", "8")
    with team(tmp_path / "data", stigmer_postgres_store_url, 3600) as t:
        threads = t.server.pools.stream_threads
        share = threads // 2
        with HeldStreams(t.server.address, WATCH, threads, t.bearer(t.viewer)) as held:
            ended = held.wait_ended(threads - share, WAIT)
            assert len(ended) == threads - share
            assert all(code == RESOURCE_EXHAUSTED and ENV in message for code, message in ended.values())
            made = t.answer(lambda: t.create(t.editor, "x"))
            assert t.answer(lambda: t.get(t.editor, made.metadata.id)).metadata.name == "x"


def test_calls_ended_by_the_read_timeout_give_their_slots_back(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    with team(tmp_path / "data", stigmer_postgres_store_url, 1) as t:
        bearer = t.bearer(t.viewer)
        for _ in range(2):  # a second round would be refused if the first kept a slot
            with (
                HeldStreams(t.server.address, GET, READ_SHARE, bearer) as reads,
                HeldStreams(t.server.address, CREATE, RPC_SHARE, bearer) as writes,
            ):
                for held in (reads, writes):
                    ended = held.wait_all_ended(WAIT)
                    assert len(ended) == len(held.ids)
                    assert {code for code, _ in ended.values()} == {DEADLINE_EXCEEDED}
            t.until_none_held(t.viewer_principal)
        made = t.create(t.editor, "after-the-timeouts")
        assert t.get(t.viewer, made.metadata.id).metadata.name == "after-the-timeouts"


def test_calls_that_fail_give_their_slots_back(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    with team(tmp_path / "data", stigmer_postgres_store_url, 3600) as t:
        for _ in range(2 * RPC_SHARE + 1):
            assert isinstance(refused(lambda: t.create(t.viewer, "a-viewer-may-not")), errors.PermissionDenied)
        for _ in range(2 * READ_SHARE + 1):
            assert isinstance(refused(lambda: t.get(t.viewer, "agt_missing")), errors.NotFound)
        assert t.held(t.viewer_principal) == 0


def test_one_orgs_members_together_hold_at_most_the_orgs_share(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    """Each token kept to half of a pool, two viewers of one org (an org's admin can make more
    tokens) held every read thread together, and every other org's reads waited. Now the callers
    of one org together hold at most ``STIGMER_MAX_UNREAD_CALLS_PER_ORG`` (three quarters of each
    pool by default): past it, the org's calls are refused naming the org and the setting, and
    another org's members are answered."""
    with team(tmp_path / "data", stigmer_postgres_store_url, 10) as t:
        second, made_second = make_token(t.app, ALPHA, "viewer", "second holder")
        second_principal = f"token:{ALPHA}/{made_second.metadata.slug}"
        outsider, _ = make_token(t.app, BETA, "editor", "another org")
        beta_agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="in-beta", org=BETA))
        creates = agent_grpc.AgentCommandControllerStub(t.channel).create
        made = creates(beta_agent, metadata=t.bearer(outsider), timeout=WAIT)
        first = HeldStreams(t.server.address, GET, READ_SHARE, t.bearer(t.viewer))
        try:
            waited_until = time.monotonic() + WAIT
            while t.held(t.viewer_principal) < READ_SHARE and time.monotonic() < waited_until:
                time.sleep(0.01)
            assert t.held(t.viewer_principal) == READ_SHARE
            with HeldStreams(t.server.address, GET, READ_SHARE, t.bearer(second)) as more:
                # within its own share, the second viewer is stopped by its org's
                ended = more.wait_ended(READ_SHARE - (READ_ORG_SHARE - READ_SHARE), WAIT)
                assert {code for code, _ in ended.values()} == {RESOURCE_EXHAUSTED}
                assert all(ORG_ENV in message.replace("%20", " ") for _, message in ended.values()), ended
                refusal = refused(lambda: t.get(t.editor, "agt_missing"))  # the org's other members too
                assert isinstance(refusal, errors.ResourceExhausted)
                assert (refusal.reason, refusal.metadata) == (
                    REASON,
                    {
                        "limit": str(READ_ORG_SHARE),
                        "setting": ORG_ENV,
                        "principal": t.editor_principal,
                        "org": ALPHA,
                    },
                )
                # another org has the pool's last quarter
                assert t.answer(lambda: t.get(outsider, made.metadata.id)).metadata.name == "in-beta"
                # the one within its org's share, and the one ended past it (counted a while, as any)
                assert t.held(second_principal) == READ_SHARE
        finally:
            first.close()
        t.until_none_held(t.viewer_principal)
        t.until_none_held(second_principal)
        assert isinstance(refused(lambda: t.get(t.editor, "agt_missing")), errors.NotFound)


def test_a_share_counts_a_call_against_its_principal_and_each_of_its_orgs() -> None:
    limit = CallLimit(2, "the pool", org_limit=3)
    one, two, three = (Account(f"token:{ALPHA}/{n}", (ALPHA,)) for n in ("one", "two", "three"))
    elsewhere = Account(f"token:{BETA}/x", (BETA,))
    assert limit.late(one) and limit.late(one)
    assert not limit.late(one), "its own share is full"
    assert limit.late(two)
    assert not limit.late(three), "its org's share is full"
    with pytest.raises(errors.ResourceExhausted, match=ORG_ENV) as caught:
        limit.take(three)
    assert caught.value.metadata["org"] == ALPHA
    assert "org alpha" in limit.ended(three, 1.0)
    limit.take(elsewhere)
    limit.give(two, until=time.monotonic() + 60)  # ended unread: still counted, for the principal and the org
    assert (limit.held(two.principal), limit.held(("org", ALPHA))) == (1, 3)
    limit.give(one)
    limit.give(one)
    assert (limit.held(one.principal), limit.held(("org", ALPHA))) == (0, 1)
    limit.take(three)


def test_the_org_share_is_a_setting_checked_at_startup() -> None:
    for raw in ("0", "-1", "many"):
        with pytest.raises(StartupError, match=ORG_ENV):
            PoolSizes.from_env({ORG_ENV: raw})
    assert PoolSizes.from_env({ORG_ENV: "5"}).unread_calls_per_org == 5
    shares = PoolSizes(rpc_threads=32).unread_limit(32, "rpc")
    assert (shares.limit, shares.org_limit) == (16, 24)
    assert PoolSizes().unread_limit(1, "one").org_limit == 1
    assert PoolSizes(unread_calls_per_org=5).unread_limit(32, "rpc").org_limit == 5


def test_the_setting_is_checked_at_startup_and_defaults_to_half_of_each_pool() -> None:
    for raw in ("0", "-1", "2.5", "many"):
        with pytest.raises(StartupError, match=ENV):
            PoolSizes.from_env({ENV: raw})
    with pytest.raises(StartupError, match=ENV):
        PoolSizes(unread_calls_per_caller=0)
    assert PoolSizes.from_env({ENV: "3"}).unread_calls_per_caller == 3
    assert PoolSizes(read_threads=4).call_shares() == (2, 16)
    assert PoolSizes(read_threads=1, rpc_threads=1).call_shares() == (1, 1)
    assert PoolSizes(read_threads=4, unread_calls_per_caller=3).call_shares() == (3, 3)


def test_the_grace_is_a_setting_checked_at_startup() -> None:
    for raw in ("0", "-1", "nan", "soon", "6"):  # 6: past the 5 s read timeout
        with pytest.raises(StartupError, match=GRACE_ENV):
            PoolSizes.from_env({GRACE_ENV: raw})
    assert PoolSizes.from_env({GRACE_ENV: "2.5"}).unread_grace_seconds == 2.5
    assert ReadDeadlines(5.0).grace == 1.0
    assert ReadDeadlines(1.0).grace == 0.5
    assert ReadDeadlines(30.0, 4.0).grace == 4.0
    # a call ended unread counts for 5 s at most: a read timeout raised for a slow link does not
    # keep a client whose connection dropped refused for as long
    assert (ReadDeadlines(30.0).struck_for, ReadDeadlines(3.0).struck_for) == (5.0, 3.0)


@contextlib.contextmanager
def local_team(data: Path, read_seconds: float, share: int) -> Iterator[Team]:
    """The local daemon's server (grpc's asyncio server, LMDB) requiring tokens, with a share set."""
    sizes = PoolSizes(request_read_seconds=read_seconds, unread_calls_per_caller=share)
    with _serving(Application.open(data, durable=False, require_auth=True), sizes, LocalTeam) as made:
        assert made.server.asynchronous
        yield made


class LocalTeam(Team):
    def held(self, principal: str) -> int:
        serving = self.server._serving
        assert isinstance(serving, AsyncServing) and serving.read_bound.limit is not None
        return serving.read_bound.limit.held(principal)


def test_on_the_local_daemons_server_a_members_unread_calls_hold_at_most_a_share(tmp_path: Path) -> None:
    """With the setting given, the asyncio server keeps one token to a share of unread calls as the
    sync server does (by default it keeps none: there an unread call holds no thread)."""
    share = 4
    with local_team(tmp_path / "data", 10, share) as t:
        bearer = t.bearer(t.viewer)
        with HeldStreams(t.server.address, GET, 2 * share, bearer) as gets:
            ended = gets.wait_ended(share, WAIT)
            assert len(ended) == share
            assert all(code == RESOURCE_EXHAUSTED and ENV in message for code, message in ended.values())
            # Opened once the gets hold the share: opened with them, on a connection of their
            # own, the server may count a watch before a get (a busy machine did), and the
            # share then goes to the watches.
            with HeldStreams(t.server.address, WATCH, share, bearer) as watches:
                streams_ended = watches.wait_all_ended(WAIT)  # the gets hold the whole share
                assert {code for code, _ in streams_ended.values()} == {RESOURCE_EXHAUSTED}
                refusal = refused(lambda: t.get(t.viewer, "agt_missing"))
                assert isinstance(refusal, errors.ResourceExhausted)
                assert (refusal.reason, refusal.metadata) == (
                    REASON,
                    {"limit": str(share), "setting": ENV, "principal": t.viewer_principal},
                )
                made = t.answer(lambda: t.create(t.editor, "still-served"))
                assert t.answer(lambda: t.get(t.editor, made.metadata.id)).metadata.name == "still-served"
                # the gets held and the gets ended unread; the watches were refused on arrival, uncounted
                assert t.held(t.viewer_principal) == 2 * share
        t.until_none_held(t.viewer_principal)
        assert t.get(t.viewer, made.metadata.id).metadata.name == "still-served"


def test_on_the_local_daemons_server_many_calls_in_flight_are_not_refused(tmp_path: Path) -> None:
    in_flight = 256
    with local_team(tmp_path / "data", 3600, 2) as t:
        calls = burst(t, in_flight)
        assert [call.code() for call in calls] == [grpc.StatusCode.OK] * len(calls)
        assert t.held(t.editor_principal) == 0


def test_on_the_local_daemons_server_calls_reset_before_their_grace_still_count(tmp_path: Path) -> None:
    with local_team(tmp_path / "data", 3, 2) as t:
        with HeldStreams(t.server.address, GET, 2, t.bearer(t.viewer)):
            time.sleep(0.3)  # past the strike, short of the 1 s grace
        waited_until = time.monotonic() + WAIT
        while t.held(t.viewer_principal) < 2 and time.monotonic() < waited_until:
            time.sleep(0.01)
        refusal = refused(lambda: t.get(t.viewer, "agt_missing"))
        assert isinstance(refusal, errors.ResourceExhausted) and refusal.reason == REASON
        t.until_none_held(t.viewer_principal)
        assert isinstance(refused(lambda: t.get(t.viewer, "agt_missing")), errors.NotFound)
