"""``connect(data_dir=D)`` twice in one process shares the store; a forked child is told why it cannot use it.

LMDB lets a process open a store once: a second ``connect(data_dir=D)`` (two parts of one
program) was refused "already open in this process". A child forked after the parent opened it
(gunicorn's ``--preload``, ``multiprocessing``'s fork context) read and wrote through the
parent's client silently, which LMDB forbids, and its own ``connect`` was told the store was
already open "in this process".
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from stigmer_core import connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import StartupError


def _create(client: object, name: str) -> str:
    stub = agent_grpc.AgentCommandControllerStub(client.channel)  # type: ignore[attr-defined]
    return str(stub.create(agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name))).metadata.id)


def _names(client: object) -> list[str]:
    listed = agent_grpc.AgentQueryControllerStub(client.channel).list(agent_pb2.ListAgentsRequest())  # type: ignore[attr-defined]
    return sorted(agent.metadata.name for agent in listed.entries)


def test_two_connects_to_one_data_dir_share_the_store_until_the_last_closes(tmp_path: Path) -> None:
    first = connect(data_dir=tmp_path / "data")
    second = connect(data_dir=tmp_path / "data")
    _create(first, "one")
    _create(second, "two")
    assert _names(first) == _names(second) == ["one", "two"]
    first.close()
    first.close()  # twice: still one release
    with pytest.raises(ValueError):
        _names(first)
    assert _names(second) == ["one", "two"]  # the store is still open for it
    second.close()
    with connect(data_dir=tmp_path / "data") as again:  # opened anew once every client closed
        assert _names(again) == ["one", "two"]


def _child_connects(data_dir: str, answers: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        connect(data_dir=data_dir)
        answers.put("opened")
    except StartupError as refused:
        answers.put(str(refused))


def _child_uses_the_parents(client: object, answers: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        _names(client)
        answers.put("used")
    except ValueError as refused:
        answers.put(str(refused))


def _forks(data_dir: str) -> None:
    """The parent's part, in a process of its own: what each forked child said, one per line."""
    context = multiprocessing.get_context("fork")
    with connect(data_dir=data_dir) as client:
        _create(client, "parent's")
        for target, args in ((_child_connects, (data_dir,)), (_child_uses_the_parents, (client,))):
            answers = context.Queue()
            child = context.Process(target=target, args=(*args, answers))
            child.start()
            print(json.dumps(answers.get(timeout=60)), flush=True)
            child.join(60)
        print(json.dumps(_names(client)), flush=True)


@pytest.mark.skipif(sys.platform != "linux", reason="fork as gunicorn --preload uses it: Linux here")
def test_a_forked_child_is_told_the_store_is_its_parents(tmp_path: Path) -> None:
    # In a fresh interpreter: a test process has grpc threads of earlier tests running, and a child
    # forked while one is inside grpc can hang there (grpc skips its fork handlers then), which a
    # program forking before it serves does not meet.
    parent = f"from tests.test_connect_shared import _forks; _forks({str(tmp_path / 'data')!r})"
    root = Path(__file__).resolve().parent.parent
    ran = subprocess.run([sys.executable, "-c", parent], cwd=root, capture_output=True, text=True, timeout=150)
    assert ran.returncode == 0, ran.stderr
    *children, parents = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(children) == 2, ran.stdout
    for said in children:
        assert "before this process was forked from it" in said, said
        assert "post_fork" in said
    assert parents == ["parent's"]  # the parent's own is untouched


def test_a_server_target_with_a_store_to_open_is_refused(tmp_path: Path) -> None:
    """``connect("127.0.0.1:51900", data_dir=…, store=…, read_only=True)`` dialled the server and
    ignored the rest silently, where the CLI refuses ``--endpoint`` with ``--data-dir``."""
    from stigmer_core.errors import InvalidArgument

    for given in ({"data_dir": tmp_path}, {"store": "postgresql://x@127.0.0.1:1/z"}, {"read_only": True}):
        with pytest.raises(InvalidArgument) as refused:
            connect("127.0.0.1:1", **given)  # type: ignore[arg-type]
        assert [v.field for v in refused.value.violations] == list(given), refused.value
        assert "is a server, which serves its own" in str(refused.value)
