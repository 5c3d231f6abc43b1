"""The store's own failures: a full disk while serving, and data files that must not start.

The full disk is real: a 4 MiB tmpfs mounted for the test (this needs
root, or CAP_SYS_ADMIN; without it the tests that need a mount are skipped,
saying so), unmounted at teardown.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, StartupError
from stigmer_core.kind_client import KindClient
from stigmer_core.server import serve
from tests.hardening_support import agent, assert_serving, network


def _mount(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode != 0:
        # CI runs as root and must run this test; elsewhere mounting needs privileges a developer may lack.
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs: {done.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()}): needs root or CAP_SYS_ADMIN")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small-disk"
    _mount(where, "4m")
    try:
        yield where
    finally:
        _umount(where)


def test_a_full_disk_answers_resource_exhausted_keeps_reads_and_recovers(small_disk: Path) -> None:
    app = Application.open(small_disk / "data", durable=False)
    server, channel = network(app)
    try:
        agents = KindClient(channel, app.registry.kind("Agent"))
        first = agents.create(agent("first"))
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(free - (512 << 10), 0))  # leave the store about 512 KiB
        acknowledged = [first]
        error = None
        for i in range(64):
            big = agent(f"filling {i}")
            big.spec.instructions = uuid.uuid4().hex * 8000  # 256 KB, not compressible by anything
            try:
                acknowledged.append(agents.create(big))
            except grpc.RpcError as exc:
                error = exc
                break
        assert error is not None, "the disk never filled"
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "disk" in error.details() and "full" in error.details()
        # reads keep working, and everything acknowledged is there
        for made in acknowledged:
            assert agents.get(made.metadata.id) == made
        assert {a.metadata.id for a in agents.list_all()} == {a.metadata.id for a in acknowledged}
        # A delete may still fit in pages the store freed earlier; if it needs new ones it is
        # refused the same way, and then nothing of it happened.
        try:
            agents.delete(first.metadata.id)
            deleted = True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert agents.get(first.metadata.id) == first
            deleted = False
        # space comes back: writes work again
        filler.unlink()
        if not deleted:
            agents.delete(first.metadata.id)
        agents.create(agent("after the disk came back"))
        assert_serving(channel, app)
    finally:
        channel.close()
        server.stop(grace=1)
        app.close()


def _stored(data: Path) -> None:
    with Application.open(data, durable=False) as app:
        KindClient(app.channel(), app.registry.kind("Agent")).create(agent("kept"))


def test_an_empty_data_file_stops_the_daemon_with_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _stored(data)
    (data / "data.mdb").write_bytes(b"")  # truncated
    with pytest.raises(StartupError, match="empty"):
        serve("127.0.0.1:0", data)
    assert (data / "data.mdb").stat().st_size == 0  # nothing was made of it


def test_a_read_only_data_file_stops_the_daemon_with_a_reason(tmp_path: Path) -> None:
    """The data file alone is made read-only (a read-only bind mount of it: root ignores file modes)."""
    data = tmp_path / "data"
    _stored(data)
    target = data / "data.mdb"
    done = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        # As above: root in CI, a skip only where the developer cannot mount.
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to bind-mount: {done.stderr.decode().strip()}")
        pytest.skip(f"cannot bind-mount here ({done.stderr.decode().strip()}): needs root or CAP_SYS_ADMIN")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        with pytest.raises(StartupError, match="read-only"):
            serve("127.0.0.1:0", data)
    finally:
        _umount(target)


def test_a_key_too_long_for_lmdb_is_invalid_argument_and_rolls_back_alone(tmp_path: Path) -> None:
    """A write whose index key would pass LMDB's 511 bytes fails alone, as bad input, not INTERNAL."""
    from stigmer_core import InvalidArgument
    from stigmer_core.store.lmdb_store import LmdbStore

    with LmdbStore(tmp_path / "data", durable=False) as store:
        store.transact(lambda txn: txn.put(b"o/ok", b"1"))

        def too_long(txn: object) -> None:
            txn.put(b"o/partial", b"")  # type: ignore[attr-defined]
            txn.put(b"x/" + b"v" * 600, b"")  # type: ignore[attr-defined]

        with pytest.raises(InvalidArgument, match="511"):
            store.transact(too_long)
        with store.read() as txn:
            assert [key for key, _ in txn.scan(b"o/")] == [b"o/ok"]
        store.transact(lambda txn: txn.put(b"o/after", b"2"))
