"""Encryption at rest: one key per data directory, bound ciphertexts; the key's safety
(synced before use, fingerprinted in the store, never silently replaced) and the
data directory's file modes."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from stigmer_core import Application, FailedPrecondition
from stigmer_core.datadir import DataDirLock
from stigmer_plugins.secret_box import WrongKey
from stigmer_plugins.secrets import (
    KEY_ENV,
    KEY_FILE,
    KEY_FILE_ENV,
    RUN_KEYS_FILE,
    SecretBox,
    SecretKeyError,
    box,
    fingerprint,
    write_key_file,
)
from tests.agent_execution_support import Kinds


def test_key_file_is_private_and_stable(tmp_path: Path, stigmer_store: str | None) -> None:
    with Application.open(tmp_path / "data", durable=False, store=stigmer_store) as app:
        token = box(app.registry).encrypt("hunter2", "env-1/PASSWORD")
    key = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "hunter2" not in token and SecretBox.is_encrypted(token)
    with Application.open(tmp_path / "data", durable=False, store=stigmer_store) as again:
        assert box(again.registry).decrypt(token, "env-1/PASSWORD") == "hunter2"


def test_ciphertext_is_bound_to_its_place_and_key(tmp_path: Path) -> None:
    one = SecretBox.for_data_dir(tmp_path)
    token = one.encrypt("value", "env-1/A")
    with pytest.raises(FailedPrecondition):
        one.decrypt(token, "env-2/A")
    (tmp_path / "other").mkdir()
    with pytest.raises(FailedPrecondition):
        SecretBox.for_data_dir(tmp_path / "other").decrypt(token, "env-1/A")
    # the raw form the run-key stores open: a wrong place or key is the box's WrongKey, which they
    # catch without importing cryptography themselves
    sealed = one.seal_bytes(b"run key", b"run/1")
    assert one.open_bytes(sealed, b"run/1") == b"run key"
    with pytest.raises(WrongKey):
        one.open_bytes(sealed, b"run/2")
    with pytest.raises(WrongKey):
        SecretBox.for_data_dir(tmp_path / "other").open_bytes(sealed, b"run/1")


def _seal_one(app: Application) -> None:
    """Store one environment secret, which records the key's fingerprint in the store."""
    from stigmer_core.api.agentic.environment.v1 import environment_pb2
    from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as env_grpc

    env = environment_pb2.Environment(metadata={"name": "prod"})
    env.spec.data["DB"].value = "hunter2"
    env.spec.data["DB"].is_secret = True
    env_grpc.EnvironmentCommandControllerStub(app.channel()).create(env)


def test_a_missing_key_with_sealed_secrets_refuses_to_start(tmp_path: Path, stigmer_store: str | None) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False, store=stigmer_store) as app:
        fp = fingerprint((data / KEY_FILE).read_bytes())
        _seal_one(app)
    (data / KEY_FILE).unlink()
    with pytest.raises(SecretKeyError) as err:
        Application.open(data, durable=False, store=stigmer_store)
    assert "missing" in err.value.message and fp[:8].hex() in err.value.message
    assert not (data / KEY_FILE).exists(), "no new key was made in its place"


def test_a_different_key_with_sealed_secrets_refuses_to_start(tmp_path: Path, stigmer_store: str | None) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False, store=stigmer_store) as app:
        _seal_one(app)
    original = (data / KEY_FILE).read_bytes()
    (data / KEY_FILE).write_bytes(os.urandom(32))
    with pytest.raises(SecretKeyError) as err:
        Application.open(data, durable=False, store=stigmer_store)
    assert "sealed with key" in err.value.message
    (data / KEY_FILE).write_bytes(original)
    with Application.open(data, durable=False, store=stigmer_store):
        pass


def test_a_missing_key_without_sealed_secrets_is_simply_made(tmp_path: Path, stigmer_store: str | None) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False, store=stigmer_store):
        pass
    (data / KEY_FILE).unlink()
    with Application.open(data, durable=False, store=stigmer_store):
        pass
    assert len((data / KEY_FILE).read_bytes()) == 32


def test_the_key_can_come_from_the_environment_or_a_file(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32)
    monkeypatch.setenv(KEY_ENV, base64.b64encode(key).decode())
    data = tmp_path / "data"
    with Application.open(data, durable=False, store=stigmer_store) as app:
        assert box(app.registry).fingerprint == fingerprint(key)
        _seal_one(app)
    assert not (data / KEY_FILE).exists(), "a key given in the environment is not written to disk"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SecretKeyError):  # the data directory has no key of its own: refused, not replaced
        Application.open(data, durable=False, store=stigmer_store)
    elsewhere = tmp_path / "keys" / "stigmer.key"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(key)
    monkeypatch.setenv(KEY_FILE_ENV, str(elsewhere))
    with Application.open(data, durable=False, store=stigmer_store) as app:
        assert box(app.registry).fingerprint == fingerprint(key)
    monkeypatch.setenv(KEY_ENV, "not base64!")
    with pytest.raises(SecretKeyError) as err:
        Application.open(data, durable=False, store=stigmer_store)
    assert KEY_ENV in err.value.message


def test_the_key_file_is_synced_before_it_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_mode)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_key_file(tmp_path / "k" / KEY_FILE, os.urandom(32))
    kinds = [stat.S_ISREG(m) for m in synced], [stat.S_ISDIR(m) for m in synced]
    assert synced and kinds[0][0] and kinds[1][-1], "the file, then its directory"
    with pytest.raises(FileExistsError):
        write_key_file(tmp_path / "k" / KEY_FILE, os.urandom(32))
    assert stat.S_IMODE((tmp_path / "k" / KEY_FILE).stat().st_mode) == 0o600


# LMDB only: the data directory's files it checks are LMDB's (data.mdb, lock.mdb, the run keys' file).
def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        data = tmp_path / "home" / "data"
        lock = DataDirLock(data)
        lock.acquire()
        try:
            with Application.open(data, durable=False) as app:
                channel = app.channel()
                Kinds.on(app, channel).execution(
                    agent_id=Kinds.on(app, channel).agent().metadata.id, runtime_env={"K": ("v", True)}
                )
        finally:
            lock.release()
    finally:
        os.umask(old)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    names = sorted(p.name for p in data.iterdir())
    assert {"data.mdb", "lock.mdb", KEY_FILE, RUN_KEYS_FILE, "daemon.lock"} <= set(names)
    assert {n: oct(stat.S_IMODE((data / n).stat().st_mode)) for n in names} == {n: oct(0o600) for n in names}


# LMDB only: the file it loosens and checks is LMDB's data.mdb.
def test_an_older_data_directory_is_tightened_when_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False):
        pass
    os.chmod(data, 0o755)
    os.chmod(data / "data.mdb", 0o644)
    with Application.open(data, durable=False):
        pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "data.mdb").stat().st_mode) == 0o600
