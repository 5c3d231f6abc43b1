"""Stateless replicas: several daemons on one PostgreSQL schema serve the same data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.server import Server
from stigmer_core.testing.postgres import _free_port


class Replica:
    def __init__(self, data_dir: Path, url: str) -> None:
        self.app = Application.open(data_dir, durable=False, store=url)
        self.server = Server(self.app, "127.0.0.1:0", max_workers=8)
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address)
        self.command = agent_grpc.AgentCommandControllerStub(self.channel)
        self.query = agent_grpc.AgentQueryControllerStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=1)
        self.app.close()


@pytest.fixture
def replicas(tmp_path: Path, stigmer_postgres_store_url: str) -> Iterator[tuple[Replica, Replica]]:
    first = Replica(tmp_path / "a", stigmer_postgres_store_url)
    # replicas share the secret key, as a deployment copies it to each daemon
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
    second = Replica(tmp_path / "b", stigmer_postgres_store_url)
    yield first, second
    second.close()
    first.close()


def _agent(name: str, slug: str = "") -> agent_pb2.Agent:
    return agent_pb2.Agent(
        metadata=metadata_pb2.ApiResourceMetadata(name=name, slug=slug), spec=agent_pb2.AgentSpec(description=name)
    )


def test_a_write_on_one_replica_is_read_on_the_other_at_once(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    for i in range(10):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        created = writer.command.create(_agent(f"agent {i}"), timeout=10)
        assert reader.query.get(agent_pb2.AgentId(value=created.metadata.id), timeout=10) == created
    listed = b.query.list(agent_pb2.ListAgentsRequest(page_size=100), timeout=10)
    assert len(listed.entries) == 10


def test_racing_creates_of_one_slug_across_replicas_let_exactly_one_win(replicas: tuple[Replica, Replica]) -> None:
    racers = 8
    barrier = threading.Barrier(racers)

    def race(i: int) -> grpc.StatusCode:
        replica = replicas[i % 2]
        barrier.wait(timeout=10)
        try:
            replica.command.create(_agent(f"racer {i}", slug="contested"), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(racers) as pool:
        codes = list(pool.map(race, range(racers)))
    assert codes.count(grpc.StatusCode.OK) == 1, codes
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == racers - 1, codes


def test_a_stale_version_is_aborted_on_either_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    created = a.command.create(_agent("versioned"), timeout=10)
    update = agent_pb2.Agent()
    update.CopyFrom(created)
    update.spec.description = "changed on b"
    updated = b.command.update(update, timeout=10)
    assert updated.metadata.resource_version > created.metadata.resource_version
    for replica in (a, b):
        stale = agent_pb2.Agent()
        stale.CopyFrom(created)
        stale.spec.description = "from a stale read"
        with pytest.raises(grpc.RpcError) as caught:
            replica.command.update(stale, timeout=10)
        assert caught.value.code() == grpc.StatusCode.ABORTED
    assert a.query.get(agent_pb2.AgentId(value=created.metadata.id), timeout=10) == updated


def test_a_replica_killed_mid_load_does_not_disturb_the_others_clients(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    survivor = Replica(tmp_path / "survivor", stigmer_postgres_store_url)
    (tmp_path / "doomed").mkdir()
    shutil.copy(tmp_path / "survivor" / "secret.key", tmp_path / "doomed" / "secret.key")
    address = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIGMER_")}
    env["STIGMER_HOME"] = str(tmp_path / "home")
    doomed = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--address", address,
         "--data-dir", str(tmp_path / "doomed"), "--store", stigmer_postgres_store_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert doomed.stdout is not None
        first_line = doomed.stdout.readline()
        assert f"listening on {address}" in first_line, first_line
        doomed_channel = grpc.insecure_channel(address)
        doomed_command = agent_grpc.AgentCommandControllerStub(doomed_channel)
        survivor_errors: list[BaseException] = []
        acknowledged: list[str] = []
        lock = threading.Lock()
        halfway = threading.Event()

        def survivor_client(worker: int) -> None:
            for i in range(40):
                try:
                    created = survivor.command.create(_agent(f"survivor {worker} {i}"), timeout=10)
                    got = survivor.query.get(agent_pb2.AgentId(value=created.metadata.id), timeout=10)
                    assert got == created
                    with lock:
                        acknowledged.append(created.metadata.id)
                except BaseException as exc:  # any error of the survivor's clients fails the test
                    survivor_errors.append(exc)
                if i == 10:
                    halfway.set()

        def doomed_client(worker: int) -> None:
            for i in range(200):
                try:
                    created = doomed_command.create(_agent(f"doomed {worker} {i}"), timeout=5)
                except grpc.RpcError:
                    return  # the daemon is gone: its own clients see it, nobody else's
                with lock:
                    acknowledged.append(created.metadata.id)

        threads = [threading.Thread(target=survivor_client, args=(w,)) for w in range(3)]
        threads += [threading.Thread(target=doomed_client, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        assert halfway.wait(timeout=60)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=120)
        doomed_channel.close()
        assert survivor_errors == []
        # every write either daemon acknowledged is there, served by the survivor
        for object_id in acknowledged:
            assert survivor.query.get(agent_pb2.AgentId(value=object_id), timeout=10).metadata.id == object_id
        after = survivor.command.create(_agent("after the kill"), timeout=10)
        assert after.metadata.id
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=30)
        if doomed.stdout is not None:
            doomed.stdout.close()
        survivor.close()
