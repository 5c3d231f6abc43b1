"""``stigmer secrets rotate-key``, a daemon that refuses a lost key, and the modes of the files it writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, FailedPrecondition
from stigmer_core.config import CONFIG_NAME
from stigmer_core.store.lmdb_store import DATA_FILE
from stigmer_plugins.secrets import (
    FINGERPRINT_KEY,
    KEY_FILE,
    KEY_FILE_ENV,
    RUN_KEYS_FILE,
    STAGED_SUFFIX,
    SecretKeyError,
    fingerprint,
    secrets,
    write_key_file,
)
from tests.agent_execution_support import Kinds, details_of

from .conftest import Stigmer

ENV_SECRET = "env-secret-rotated-31c0"
RUN_SECRET = "run-secret-rotated-8d2e"


@pytest.fixture(autouse=True)
def _no_key_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STIGMER_SECRET_KEY", "STIGMER_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def _kinds(data_dir: Path, store: str | None = None) -> Iterator[Kinds]:
    with Application.open(data_dir, durable=False, store=store) as app:
        channel = app.channel()
        try:
            yield Kinds.on(app, channel)
        finally:
            channel.close()


def _a_live_run(data_dir: Path, store: str | None = None) -> tuple[str, str]:
    """An environment secret and a live run with a secret of its own; (context id, agent id)."""
    with _kinds(data_dir, store) as kinds:
        kinds.environment("prod", {"DB": (ENV_SECRET, True)})
        agent = kinds.agent(env_slugs=["prod"])
        run = kinds.execution(agent_id=agent.metadata.id, runtime_env={"TOKEN": (RUN_SECRET, True)})
        return run.status.execution_context_id, agent.metadata.id


def test_rotate_key_reseals_every_secret_and_keeps_live_runs_readable(stigmer: Stigmer) -> None:
    context_id, agent_id = _a_live_run(stigmer.data_dir)
    old_key = (stigmer.data_dir / KEY_FILE).read_bytes()

    out = stigmer.ok("secrets", "rotate-key")

    new_key = (stigmer.data_dir / KEY_FILE).read_bytes()
    assert new_key != old_key and len(new_key) == 32
    assert f"key {fingerprint(old_key)[:8].hex()} -> {fingerprint(new_key)[:8].hex()}" in out
    assert "of 1 object and 1 live run's key in " in out, out
    assert not (stigmer.data_dir / (KEY_FILE + STAGED_SUFFIX)).exists()
    assert stat.S_IMODE((stigmer.data_dir / KEY_FILE).stat().st_mode) == 0o600
    with _kinds(stigmer.data_dir) as kinds:
        live = kinds.contexts.get(context_id)
        assert live.spec.data["TOKEN"].value == RUN_SECRET, "the live run's key was re-wrapped"
        assert live.spec.data["DB"].value == ENV_SECRET
        again = kinds.execution("again", agent_id=agent_id)
        assert kinds.contexts.get(again.status.execution_context_id).spec.data["DB"].value == ENV_SECRET


def test_rotate_key_to_a_new_key_file(stigmer: Stigmer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context_id, _ = _a_live_run(stigmer.data_dir)
    target = tmp_path / "keys" / "next.key"
    out = stigmer.ok("secrets", "rotate-key", "--new-key-file", str(target))
    assert str(target) in out and KEY_FILE_ENV in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    refused = stigmer.fails("serve", "--data-dir", str(stigmer.data_dir), "--address", "127.0.0.1:0")
    assert "sealed with key" in refused, "the old key file no longer opens the store"
    monkeypatch.setenv(KEY_FILE_ENV, str(target))
    with _kinds(stigmer.data_dir) as kinds:
        assert kinds.contexts.get(context_id).spec.data["TOKEN"].value == RUN_SECRET


def _recorded(data_dir: Path, store: str) -> bytes | None:
    with Application.open(data_dir, durable=False, store=store) as app, app.store.read() as txn:
        return txn.get(FINGERPRINT_KEY)


@pytest.mark.parametrize("given", ["--store", "STIGMER_STORE", "config"])
def test_rotate_key_re_seals_the_postgresql_store_the_settings_name(
    stigmer: Stigmer, stigmer_postgres_store_url: str, given: str
) -> None:
    """The store is chosen as every in-process command chooses it (flag, environment, config
    file); before, the command opened an empty LMDB store in the data directory, re-sealed
    nothing and replaced the key the database's secrets are sealed with."""
    url = stigmer_postgres_store_url
    context_id, agent_id = _a_live_run(stigmer.data_dir, url)
    old_key = (stigmer.data_dir / KEY_FILE).read_bytes()
    args, env = ["secrets", "rotate-key"], {}
    if given == "--store":
        args += ["--store", url]
    elif given == "STIGMER_STORE":
        env["STIGMER_STORE"] = url
    else:
        (stigmer.home / CONFIG_NAME).write_text(f"store: {url}\n")

    result = stigmer(*args, env=env)

    assert result.code == 0, result.err
    new_key = (stigmer.data_dir / KEY_FILE).read_bytes()
    assert new_key != old_key
    assert "1 object and 1 live run's key in postgresql://" in result.out, result.out
    assert "every other daemon of this database still holds the old key" in result.out
    assert not (stigmer.data_dir / DATA_FILE).exists(), "no LMDB store was made in the data directory"
    assert _recorded(stigmer.data_dir, url) == fingerprint(new_key)
    with _kinds(stigmer.data_dir, url) as kinds:
        live = kinds.contexts.get(context_id)
        assert live.spec.data["TOKEN"].value == RUN_SECRET and live.spec.data["DB"].value == ENV_SECRET
        again = kinds.execution("again", agent_id=agent_id)
        assert kinds.contexts.get(again.status.execution_context_id).spec.data["DB"].value == ENV_SECRET


def test_rotate_key_never_replaces_the_key_of_a_store_it_did_not_re_seal(
    stigmer: Stigmer, stigmer_postgres_store_url: str, tmp_path: Path
) -> None:
    data_dir, url = stigmer.data_dir, stigmer_postgres_store_url
    _a_live_run(data_dir, url)  # the secrets are in the database
    key = (data_dir / KEY_FILE).read_bytes()
    staged = data_dir / (KEY_FILE + STAGED_SUFFIX)

    message = stigmer.fails("secrets", "rotate-key")  # no store named: the data directory holds none
    assert "holds no store" in message and "--store postgresql://" in message, message
    assert not (data_dir / DATA_FILE).exists(), "no LMDB store was made"

    with Application.open(data_dir, durable=False):  # an LMDB store that holds no secret
        pass
    message = stigmer.fails("secrets", "rotate-key")
    assert "holds no secret sealed with" in message and "nothing to rotate" in message, message
    target = tmp_path / "next.key"
    message = stigmer.fails("secrets", "rotate-key", "--new-key-file", str(target))
    assert "nothing to rotate" in message, message

    assert (data_dir / KEY_FILE).read_bytes() == key and not staged.exists() and not target.exists()
    assert _recorded(data_dir, url) == fingerprint(key), "the database still names the key its secrets are sealed with"
    with _kinds(data_dir, url) as kinds:
        assert kinds.environments.get_by_reference(slug="prod").metadata.slug == "prod"


def test_a_team_rotates_once_and_a_daemon_left_with_the_old_key_refuses_until_given_the_new_one(
    stigmer: Stigmer, stigmer_postgres_store_url: str, tmp_path: Path
) -> None:
    """What docs/secrets.md tells a team to do: stop every daemon, rotate once, copy the new key
    to every daemon's key file. The rotation is refused while a daemon holds the database. An
    application it cannot see (a command's, or a daemon of a release before that lock) left
    running with the old key seals and opens nothing (FAILED_PRECONDITION naming both keys) and
    writes the rest; a daemon restarted with it is refused; given the new key, it reads every secret."""
    url, one, two = stigmer_postgres_store_url, stigmer.data_dir, tmp_path / "two"
    context_id, agent_id = _a_live_run(one, url)
    write_key_file(two / KEY_FILE, (one / KEY_FILE).read_bytes())  # the second daemon's copy of the key
    old = fingerprint((one / KEY_FILE).read_bytes())[:8].hex()
    with Application.open(two, durable=False, store=url):
        message = stigmer.fails("secrets", "rotate-key", "--store", url)
        assert "is in use: one daemon holds it (pid " in message and "stop every daemon" in message, message
    assert fingerprint((one / KEY_FILE).read_bytes())[:8].hex() == old, "the refused rotation kept the key"
    with Application.open(two, durable=False, store=url, transient=True) as left:
        channel = left.channel()
        try:
            kinds = Kinds.on(left, channel)
            assert kinds.contexts.get(context_id).spec.data["DB"].value == ENV_SECRET

            stigmer.ok("secrets", "rotate-key", "--store", url)

            new = fingerprint((one / KEY_FILE).read_bytes())[:8].hex()
            refusal = f"is key {old}, but the store's secrets are sealed with key {new}"
            for call in (
                lambda: kinds.environment("dev", {"TOKEN": ("t0k3n", True)}),
                lambda: kinds.execution("own", agent_id=agent_id, runtime_env={"T": ("x", True)}),
                lambda: kinds.contexts.get(context_id),
            ):
                code, details = details_of(call)
                assert code == grpc.StatusCode.FAILED_PRECONDITION and refusal in details, details
            kinds.environment("plain", {"REGION": ("eu", False)})
        finally:
            channel.close()
    with pytest.raises(SecretKeyError, match=refusal):
        Application.open(two, durable=False, store=url)
    write_key_file(two / KEY_FILE, (one / KEY_FILE).read_bytes(), replace=True)
    with _kinds(two, url) as kinds:
        live = kinds.contexts.get(context_id)
        assert live.spec.data["TOKEN"].value == RUN_SECRET and live.spec.data["DB"].value == ENV_SECRET


def test_rotate_key_refuses_while_the_daemon_runs(stigmer: Stigmer, daemon: str) -> None:
    message = stigmer.fails("secrets", "rotate-key")
    assert "stop it first" in message


def test_the_daemon_refuses_to_start_without_its_key(stigmer: Stigmer) -> None:
    _a_live_run(stigmer.data_dir)
    (stigmer.data_dir / KEY_FILE).unlink()
    message = stigmer.fails("serve", "--data-dir", str(stigmer.data_dir), "--address", "127.0.0.1:0")
    assert "missing" in message and "restore that key file" in message
    assert not (stigmer.data_dir / KEY_FILE).exists()


def test_a_store_opened_read_only_without_its_key_writes_nothing_and_opens_no_secret(stigmer: Stigmer) -> None:
    """The key lost, a live run's key in ``run-keys`` and a rotation's staged key beside the key
    file: the read-only application reads what is not secret, refuses every write and every
    secret with the key's problem, and leaves the store and every file beside it as they were."""
    data_dir = stigmer.data_dir
    context_id, agent_id = _a_live_run(data_dir)
    key = (data_dir / KEY_FILE).read_bytes()
    (data_dir / KEY_FILE).unlink()
    with pytest.raises(SecretKeyError, match="restore that key file"):
        Application.open(data_dir, durable=False)
    staged = data_dir / (KEY_FILE + STAGED_SUFFIX)
    staged.write_bytes(os.urandom(32))  # a rotation that never committed: a start would delete it
    before = {name: (data_dir / name).read_bytes() for name in (DATA_FILE, RUN_KEYS_FILE, staged.name)}

    with Application.open(data_dir, durable=False, read_only=True) as app:
        channel = app.channel()
        try:
            kinds = Kinds.on(app, channel)
            with app.store.read() as txn:
                revision = txn.revision
            agent = kinds.agents.get(agent_id)
            assert agent.metadata.name == "bot", "what is not secret is read"
            code, details = details_of(lambda: kinds.environment("dev", {"REGION": ("eu", False)}))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "opened read-only" in details, details
            code, details = details_of(lambda: kinds.agents.delete(agent_id))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "opened read-only" in details, details
            code, details = details_of(lambda: kinds.contexts.get(context_id))  # the live run's secrets
            assert code == grpc.StatusCode.FAILED_PRECONDITION, details
            assert f"the key file {data_dir / KEY_FILE} is missing" in details, details
            keyring = secrets(app.registry)
            with pytest.raises(FailedPrecondition, match=r"is missing.*: no secret can be sealed or opened"):
                keyring.master.encrypt("a new secret", "environment/env-x/KEY")
            with pytest.raises(FailedPrecondition, match=r"is missing.*: no secret can be sealed or opened"):
                keyring.master.decrypt("enc:v1:" + "A" * 40, "environment/env-x/KEY")
            with app.store.read() as txn:
                assert txn.revision == revision
        finally:
            channel.close()

    assert not (data_dir / KEY_FILE).exists(), "no new key was made"
    assert {name: (data_dir / name).read_bytes() for name in before} == before
    staged.unlink()
    (data_dir / KEY_FILE).write_bytes(key)
    os.chmod(data_dir / KEY_FILE, 0o600)
    with _kinds(data_dir) as kinds:
        assert kinds.contexts.get(context_id).spec.data["TOKEN"].value == RUN_SECRET, "the run key was kept"
        assert kinds.contexts.get(context_id).spec.data["DB"].value == ENV_SECRET


def test_a_read_only_application_leaves_an_interrupted_rotation_for_the_next_start(stigmer: Stigmer) -> None:
    """A committed rotation whose key file was not yet replaced is finished by a start, which
    writes; a read-only application leaves both key files as they are, holds no key, and the
    next start still finishes the rotation."""
    context_id, _ = _a_live_run(stigmer.data_dir)
    staged = stigmer.data_dir / (KEY_FILE + STAGED_SUFFIX)
    new = os.urandom(32)
    with Application.open(stigmer.data_dir, durable=False) as app:
        secrets(app.registry).rotate(app.store, app.registry, new, staged.write_bytes)
    old = (stigmer.data_dir / KEY_FILE).read_bytes()
    with Application.open(stigmer.data_dir, durable=False, read_only=True) as app:
        keyring = secrets(app.registry)
        with pytest.raises(FailedPrecondition, match="is the store's key, but it is not used by a read-only"):
            keyring.master.encrypt("a new secret", "environment/env-x/KEY")
    assert (stigmer.data_dir / KEY_FILE).read_bytes() == old and staged.read_bytes() == new
    with _kinds(stigmer.data_dir) as kinds:
        assert kinds.contexts.get(context_id).spec.data["TOKEN"].value == RUN_SECRET
    assert (stigmer.data_dir / KEY_FILE).read_bytes() == new and not staged.exists()


def test_an_interrupted_rotation_completes_at_the_next_start(stigmer: Stigmer) -> None:
    context_id, _ = _a_live_run(stigmer.data_dir)
    staged = stigmer.data_dir / (KEY_FILE + STAGED_SUFFIX)
    with Application.open(stigmer.data_dir, durable=False) as app:
        keyring = secrets(app.registry)
        new = os.urandom(32)

        def stage(key: bytes) -> None:
            staged.write_bytes(key)

        keyring.rotate(app.store, app.registry, new, stage)  # committed; the key file not yet replaced
    with _kinds(stigmer.data_dir) as kinds:
        assert kinds.contexts.get(context_id).spec.data["TOKEN"].value == RUN_SECRET
    assert (stigmer.data_dir / KEY_FILE).read_bytes() == new and not staged.exists()


def test_files_the_daemon_writes_are_private_under_umask_022(stigmer: Stigmer) -> None:
    old = os.umask(0o022)
    try:
        stigmer.start()
    finally:
        os.umask(old)
    stigmer.ok("local", "stop")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (stigmer.home / "daemon.log", stigmer.data_dir)}
    modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in stigmer.data_dir.iterdir()})
    assert modes.pop("data") == 0o700
    assert {"daemon.log", "data.mdb", "lock.mdb", "daemon.lock", KEY_FILE} <= set(modes)
    assert {name: oct(mode) for name, mode in modes.items()} == {name: oct(0o600) for name in modes}


def test_the_pid_file_is_private_under_umask_022(stigmer: Stigmer) -> None:
    old = os.umask(0o022)
    try:
        stigmer.start()
        assert stat.S_IMODE((stigmer.home / "daemon.pid").stat().st_mode) == 0o600
    finally:
        os.umask(old)
