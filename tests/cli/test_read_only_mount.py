"""A data directory on a read-only mount (a disk the kernel remounted read-only after errors, a
copy on read-only media): `export`, `get` and `list` read it; the daemon and every write refuse.

The mount is real: a read-only bind mount, which needs root (CI runs as root); elsewhere these
tests are skipped, saying so. Every mount is unmounted in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from stigmer_core import Application, FailedPrecondition, ReadOnlyMount, StartupError
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.cli.session import MOUNTED
from stigmer_core.kind_client import KindClient
from stigmer_core.read_only import MOUNT_REFUSAL
from stigmer_core.store.lmdb_store import DATA_FILE, LOCK_FILE, LmdbStore

from .conftest import Stigmer

PROD = (
    "kind: Environment\nmetadata: {name: prod}\nspec:\n  data:\n"
    "    API_KEY: {value: s3cret, isSecret: true}\n    REGION: {value: eu}\n"
)
NEEDS_WRITING = "the daemon needs to write it (check its permissions and mount)"
"""What the daemon and every write are told of a data file they cannot write, as before."""
BOT = "kind: Agent\nmetadata: {name: support-bot, labels: {team: help}}\n"


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs these tests as root)")
    done = subprocess.run(["mount", *args], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mount refused here ({done.stderr.decode().strip()}): needs root or CAP_SYS_ADMIN")


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``target`` (a directory, or a file bound over itself)."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(target))
    try:
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"remounting read-only refused here ({done.stderr.decode().strip()})")
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def _files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


def _stored(stigmer: Stigmer) -> str:
    """A store with a secret and an agent; its export, read while it was writable."""
    stigmer.ok("apply", "-f", "-", input=PROD)
    stigmer.ok("apply", "-f", "-", input=BOT)
    return stigmer.ok("export", "--all")


def test_a_store_on_a_read_only_mount_is_exported_got_and_listed(stigmer: Stigmer, tmp_path: Path) -> None:
    """The export was refused ("the daemon needs to write it") though it writes nothing: the one
    way to take the data off a disk remounted read-only. It reads it as it was, says once why
    the store is read-only, exits 0, and leaves every file as it was."""
    expected = _stored(stigmer)
    before = _files(stigmer.data_dir)
    with read_only_bind(stigmer.data_dir, tmp_path / "mnt") as mnt:
        said = f"stigmer: {mnt / DATA_FILE} is on a read-only mount: {MOUNTED}"

        result = stigmer("export", "--all", "--data-dir", str(mnt))
        assert result.code == 0, result.err
        assert result.out == expected
        assert result.err.strip().splitlines() == [said, "exported 3 objects of 7 kinds from every org"]
        (prod,) = (d for d in yaml.safe_load_all(result.out) if d["kind"] == "Environment")
        assert prod["spec"]["data"]["API_KEY"] == {"isSecret": True, "value": "<redacted>"}

        for args in (("get", "environment", "prod"), ("list", "agents")):
            result = stigmer(*args, "--data-dir", str(mnt))
            assert result.code == 0, result.err
            assert result.err.strip().splitlines() == [said], result.err
        assert "prod" in stigmer.ok("get", "environments", "--data-dir", str(mnt))
    assert _files(stigmer.data_dir) == before


def test_a_store_on_a_read_only_mount_is_exported_without_its_key(stigmer: Stigmer, tmp_path: Path) -> None:
    """The key file lost as well: the mount is what is said (once), and nothing is made."""
    expected = _stored(stigmer)
    (stigmer.data_dir / "secret.key").unlink()
    with read_only_bind(stigmer.data_dir, tmp_path / "mnt") as mnt:
        result = stigmer("export", "--all", "--data-dir", str(mnt))
        assert result.code == 0, result.err
        assert result.out == expected
        warning, _ = result.err.strip().splitlines()
        assert warning == f"stigmer: {mnt / DATA_FILE} is on a read-only mount: {MOUNTED}"
    assert not (stigmer.data_dir / "secret.key").exists()


def test_the_daemon_and_every_write_still_refuse_a_read_only_mount(stigmer: Stigmer, tmp_path: Path) -> None:
    _stored(stigmer)
    with read_only_bind(stigmer.data_dir, tmp_path / "mnt") as mnt:
        message = stigmer.fails("serve", "--data-dir", str(mnt), "--address", "127.0.0.1:0")
        assert message.startswith(f"{mnt} is on a read-only mount: the daemon needs to write it"), message
        message = stigmer.fails("local", "start", "--data-dir", str(mnt), "--address", "127.0.0.1:0")
        assert message.startswith(f"{mnt} is on a read-only mount: the daemon needs to write it"), message
        message = stigmer.fails("apply", "--data-dir", str(mnt), "-f", "-", input=BOT.replace("help", "ops"))
        assert message == f"{mnt / DATA_FILE} is read-only: {NEEDS_WRITING}"


def test_an_application_reads_a_read_only_mount_without_lmdbs_lock_and_refuses_writes(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """Opened to write, the store is refused as one that can be read (``ReadOnlyMount``); opened
    read-only, LMDB's lock file (which cannot be written there) is not taken, and a write is
    FAILED_PRECONDITION naming the mount."""
    _stored(stigmer)
    with read_only_bind(stigmer.data_dir, tmp_path / "mnt") as mnt:
        with pytest.raises(ReadOnlyMount, match="the daemon needs to write it"):
            Application.open(mnt, durable=False)
        with Application.open(mnt, durable=False, read_only=True) as app:
            engine = app.store._store  # type: ignore[attr-defined]
            assert isinstance(engine, LmdbStore) and engine._env.flags()["readonly"]
            assert not engine._env.flags()["lock"]
            channel = app.channel()
            try:
                agents = KindClient(channel, app.registry.kind("Agent"))
                assert [a.metadata.slug for a in agents.list_all(page_size=1)] == ["support-bot"]
                with pytest.raises(grpc.RpcError) as refused:
                    agents.create(agent_pb2.Agent(metadata={"name": "another"}))
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert refused.value.details() == MOUNT_REFUSAL
            finally:
                channel.close()


def test_a_data_file_alone_on_a_read_only_mount_is_read_with_lmdbs_lock(stigmer: Stigmer) -> None:
    """Its directory (and so ``lock.mdb``) is writable: the lock is taken, since it can be."""
    expected = _stored(stigmer)
    data = stigmer.data_dir / DATA_FILE
    with read_only_bind(data, data):
        result = stigmer("export", "--all")
        assert result.code == 0, result.err
        assert result.out == expected
        assert result.err.strip().splitlines()[0] == f"stigmer: {data} is on a read-only mount: {MOUNTED}"
        with LmdbStore(stigmer.data_dir, read_only=True) as store:
            assert store._env.flags()["lock"] and store.mounted_read_only
            with pytest.raises(FailedPrecondition, match="is opened read-only: nothing can be written"):
                store.transact(lambda txn: txn.put(b"o/more", b"1"))


def test_a_store_another_user_may_write_is_not_read_without_lmdbs_lock() -> None:
    """``data.mdb`` and ``lock.mdb`` readable, neither writable by this user, on a writable disk:
    their owner's daemon may be writing, so reading without the lock could see pages it reuses.
    The read-only open refuses, saying so; the ordinary open refuses as before."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to read as another user (nobody)")
    shared = Path(tempfile.mkdtemp(prefix="stigmer-shared-"))  # pytest's own tmp is its owner's alone
    try:
        _refused_to_another_user(shared)
    finally:
        shutil.rmtree(shared)


def _refused_to_another_user(shared: Path) -> None:
    data = shared / "data"
    with LmdbStore(data, durable=False) as store:
        store.transact(lambda txn: txn.put(b"o/kept", b"1"))
    for path in (shared, data):
        path.chmod(0o755)
    for name in (DATA_FILE, LOCK_FILE):
        (data / name).chmod(0o644)
    here = Path(__file__).resolve().parents[2]
    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(here)!r}, {str(here / 'plugins')!r}]\n"
        "from stigmer_core import StartupError\n"
        "from stigmer_core.errors import ReadOnlyMount\n"
        "from stigmer_core.store.lmdb_store import LmdbStore\n"
        "for read_only in (True, False):\n"
        "    try:\n"
        f"        LmdbStore({str(data)!r}, read_only=read_only)\n"
        "    except ReadOnlyMount as exc:\n"
        "        print('offered read-only:', exc)\n"
        "    except StartupError as exc:\n"
        "        print('refused:', exc)\n"
        "    else:\n"
        "        print('opened')\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    locked, written = done.stdout.splitlines()
    assert locked.startswith(f"refused: {data / LOCK_FILE} cannot be written, and LMDB's lock file is needed"), locked
    assert written == f"refused: {data / DATA_FILE} is read-only: {NEEDS_WRITING}"


def test_a_read_only_open_needs_a_store(tmp_path: Path) -> None:
    """Nothing is created to be read: a directory without ``data.mdb`` is said to hold no store."""
    with pytest.raises(StartupError, match=f"there is no store in {tmp_path} to read"):
        LmdbStore(tmp_path, read_only=True)
    assert list(tmp_path.iterdir()) == []
