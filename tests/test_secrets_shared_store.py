"""One store, several applications with different keys: only the key the store records seals or opens.

A team server's daemons share one database, each with its own copy of the
key file. One that holds another key (started before anything was recorded,
or still running after a rotation) must refuse every seal and every unseal,
in the writing transaction, naming both keys, and keep serving the rest; a
start with another key once one is recorded is refused outright.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as env_grpc
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import FailedPrecondition
from stigmer_core.headers import DRY_RUN
from stigmer_core.store import open_store
from stigmer_plugins.secrets import (
    FINGERPRINT_KEY,
    KEY_ENV,
    KEY_FILE,
    KEY_FILE_ENV,
    SecretKeyError,
    Secrets,
    fingerprint,
)
from tests.agent_execution_support import Kinds, details_of
from tests.auth_support import make_token

SECRET = "shared-store-secret-5e1a"


@pytest.fixture(autouse=True)
def _no_key_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV, KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def _kinds(app: Application) -> Iterator[Kinds]:
    channel = app.channel()
    try:
        yield Kinds.on(app, channel)
    finally:
        channel.close()


def _hex(key_file: Path) -> str:
    return fingerprint(key_file.read_bytes())[:8].hex()


def _recorded(app: Application) -> bytes | None:
    with app.store.read() as txn:
        return txn.get(FINGERPRINT_KEY)


def _revision(app: Application) -> int:
    with app.store.read() as txn:
        return txn.revision


def _refused_for_its_key(call: object, mine: str, theirs: str) -> str:
    code, details = details_of(call)  # type: ignore[arg-type]
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert f"is key {mine}, but the store's secrets are sealed with key {theirs}" in details, details
    assert "nothing was written" in details and "start it again" in details, details
    return details


def test_a_daemon_whose_key_the_store_does_not_record_refuses_to_seal_or_open_and_stays_up(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """Two daemons start on a fresh schema with different key files (nothing recorded at their
    start); the first seal records the first one's key, and the second is refused from then on."""
    url = stigmer_postgres_store_url
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    with (
        Application.open(one_dir, durable=False, store=url) as one,
        Application.open(two_dir, durable=False, store=url) as two,
        _kinds(one) as first,
        _kinds(two) as second,
    ):
        mine, theirs = _hex(two_dir / KEY_FILE), _hex(one_dir / KEY_FILE)
        assert mine != theirs and _recorded(one) is None

        first.environment("prod", {"DB": (SECRET, True)})
        agent = first.agent(env_slugs=["prod"])
        live = first.execution(agent_id=agent.metadata.id)
        assert _recorded(one) == fingerprint((one_dir / KEY_FILE).read_bytes()), "the first seal recorded its key"
        before = _revision(two)

        _refused_for_its_key(lambda: second.environment("dev", {"TOKEN": ("t0k3n", True)}), mine, theirs)
        _refused_for_its_key(  # a run key would be wrapped by the daemon's key
            lambda: second.execution("own", agent_id=agent.metadata.id, runtime_env={"T": ("x", True)}), mine, theirs
        )
        _refused_for_its_key(  # the environment's secret would be opened with it
            lambda: second.execution("via-env", agent_id=agent.metadata.id), mine, theirs
        )
        _refused_for_its_key(lambda: second.contexts.get(live.status.execution_context_id), mine, theirs)
        assert _revision(two) == before, "nothing was written"
        assert _recorded(two) == fingerprint((one_dir / KEY_FILE).read_bytes())

        second.environment("plain", {"REGION": ("eu", False)})  # the daemon is still up and writes the rest
        context = first.contexts.get(live.status.execution_context_id)
        assert context.spec.data["DB"].value == SECRET, "the store holds secrets under one key only"

    with pytest.raises(
        SecretKeyError, match=f"is key {mine}, but the store's secrets are sealed with key {theirs}"
    ) as refused:
        Application.open(two_dir, durable=False, store=url)  # a start with the other key is refused
    # which store: the database, not the data directory the key file is in (a $STIGMER_STORE left set)
    assert " (the store: the database postgresql://" in str(refused.value), refused.value
    (two_dir / KEY_FILE).write_bytes((one_dir / KEY_FILE).read_bytes())
    with Application.open(two_dir, durable=False, store=url) as two, _kinds(two) as second:
        second.environment("dev", {"TOKEN": ("t0k3n", True)})  # given the store's key, it seals


def test_the_fingerprint_is_recorded_by_the_transaction_of_the_first_seal(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A sealing write that does not commit (a dry run: its whole pipeline, sealing included,
    then a rollback) records nothing, so another daemon's key can still be the store's."""
    url = stigmer_postgres_store_url
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    with (
        Application.open(one_dir, durable=False, store=url) as one,
        Application.open(two_dir, durable=False, store=url) as two,
        _kinds(one) as first,
        _kinds(two) as second,
    ):
        env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name="prod"))
        env.spec.data["DB"].value, env.spec.data["DB"].is_secret = SECRET, True
        env_grpc.EnvironmentCommandControllerStub(one.channel()).create(env, metadata=((DRY_RUN, "true"),))
        assert _recorded(one) is None
        second.environment("prod", {"DB": (SECRET, True)})
        assert _recorded(one) == fingerprint((two_dir / KEY_FILE).read_bytes())
        _refused_for_its_key(
            lambda: first.environment("dev", {"DB": (SECRET, True)}), _hex(one_dir / KEY_FILE), _hex(two_dir / KEY_FILE)
        )


def test_on_lmdb_a_process_with_another_key_is_refused_too(tmp_path: Path) -> None:
    """The same store opened by another process with another key ($STIGMER_SECRET_KEY), which
    seals first: this application, opened when nothing was recorded, may no longer seal."""
    data = tmp_path / "data"
    other = os.urandom(32)
    with Application.open(data, durable=False) as app, _kinds(app) as kinds:
        script = textwrap.dedent(
            f"""
            from pathlib import Path
            from stigmer_core import Application
            from tests.agent_execution_support import Kinds

            with Application.open(Path({str(data)!r}), durable=False) as app:
                Kinds.on(app, app.channel()).environment("theirs", {{"DB": ("x", True)}})
            """
        )
        env = {**os.environ, KEY_ENV: base64.b64encode(other).decode()}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *filter(None, sys.path)])
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
        mine, theirs = _hex(data / KEY_FILE), fingerprint(other)[:8].hex()
        _refused_for_its_key(lambda: kinds.environment("mine", {"DB": (SECRET, True)}), mine, theirs)
        kinds.environment("plain", {"REGION": ("eu", False)})


def test_a_rotation_that_lost_a_race_to_another_is_refused_in_its_transaction(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """Two `rotate-key` runs on one database at once: the one that commits second finds the
    store recording the other's new key. It is refused in its transaction ("not rotated", not the
    advice meant for a daemon), nothing of it committed, the store's secrets under the winner's key."""
    from stigmer_plugins.secrets import new_key, secrets

    url = stigmer_postgres_store_url
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    with Application.open(one_dir, durable=False, store=url) as one, _kinds(one) as first:
        first.environment("prod", {"DB": (SECRET, True)})
    (two_dir).mkdir(mode=0o700)
    (two_dir / KEY_FILE).write_bytes((one_dir / KEY_FILE).read_bytes())
    (two_dir / KEY_FILE).chmod(0o600)
    with (
        Application.open(one_dir, durable=False, store=url) as one,
        Application.open(two_dir, durable=False, store=url) as two,
    ):
        winner_key, loser_key = new_key(), new_key()
        staged: list[bytes] = []

        def stage_after_the_other_rotates(key: bytes) -> None:  # the race: the other commits now
            staged.append(key)
            secrets(one.registry).rotate(one.store, one.registry, winner_key, lambda _: None)

        with pytest.raises(FailedPrecondition, match=r"not rotated: .* records key .*nothing was written") as refused:
            secrets(two.registry).rotate(two.store, two.registry, loser_key, stage_after_the_other_rotates)
        assert "start it again" not in str(refused.value)
        assert staged == [loser_key]
        assert _recorded(two) == fingerprint(winner_key)  # the winner's rotation stands, the loser's left nothing


def _key_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "new secret key" in r.getMessage()
    ]


def test_a_daemon_of_a_shared_store_that_makes_a_new_key_says_every_daemon_needs_a_copy(
    tmp_path: Path, stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon that made its own key beside a database other daemons serve said nothing, and the
    first seal then locked whichever daemon held another key out of every secret."""
    url = stigmer_postgres_store_url
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    caplog.set_level(logging.WARNING)
    with Application.open(one_dir, durable=False, store=url) as one, _kinds(one) as first:
        (told,) = _key_warnings(caplog)
        assert f"made a new secret key in {one_dir / KEY_FILE}" in told, told
        assert "every daemon serving that schema must hold a copy of this key file" in told, told
        assert told.startswith(f"made a new secret key in {one_dir / KEY_FILE}: schema '{one.store.schema}' of"), told  # type: ignore[attr-defined]
        assert f"${KEY_FILE_ENV}" in told and "already holds objects" not in told, told
        first.agent()  # an object, and no secret sealed: no key recorded

    caplog.clear()
    with Application.open(two_dir, durable=False, store=url):
        (told,) = _key_warnings(caplog)
        assert f"made a new secret key in {two_dir / KEY_FILE}" in told, told
        assert "already holds objects but records no key" in told, told

    caplog.clear()
    with Application.open(one_dir, durable=False, store=url):
        assert _key_warnings(caplog) == [], "a daemon whose key file exists made nothing"
    with Application.open(tmp_path / "local", durable=False):
        assert _key_warnings(caplog) == [], "an LMDB store is not shared: its new key concerns nobody else"


class _OwnEngine:
    """A store engine of a plugin's own (an LMDB store behind an object that is not one), which
    declares other daemons share it only when ``shared`` is given."""

    def __init__(self, inner: object, shared: bool | None) -> None:
        self._inner = inner
        if shared is not None:
            self.shared_by_daemons = shared

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


@pytest.mark.parametrize(("shared", "warned"), [(None, False), (False, False), (True, True)])
def test_a_new_key_is_said_to_concern_other_daemons_only_on_a_store_they_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shared: bool | None, warned: bool
) -> None:
    """Every store engine but LMDB was taken for a shared one: a single-process engine of a
    plugin's own made its key with a warning to copy it to daemons that do not exist."""
    caplog.set_level(logging.WARNING)
    inner = open_store(tmp_path / "data", durable=False)
    try:
        Secrets.open(_OwnEngine(inner, shared), tmp_path / "data", environ={})  # type: ignore[arg-type]
        assert (tmp_path / "data" / KEY_FILE).exists()  # made either way
        told = _key_warnings(caplog)
        assert len(told) == int(warned), told
        if warned:
            assert "this store's database is shared" in told[0], told
    finally:
        inner.close()


def _run_keys(app: Application) -> list[bytes]:
    with app.store.read() as txn:
        return [key for key, _ in txn.scan(b"k/")]


def test_a_command_on_a_shared_store_makes_no_key_and_runs_without_one_it_lacks(
    tmp_path: Path, stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first admin token, made in process before any daemon as the docs say, left a key file
    in the operator's data directory: the first daemon then warned that other daemons had served
    the database, and once it sealed a secret every command of the operator's (doctor, org delete,
    token) was refused for holding the wrong key. A command's key is the daemons' to give."""
    url = stigmer_postgres_store_url
    operator, daemon_dir = tmp_path / "operator", tmp_path / "daemon"
    caplog.set_level(logging.WARNING)
    with Application.open(operator, durable=False, store=url, transient=True) as command:
        make_token(command, "acme", "admin", "first")  # the first token, before any daemon
    assert not (operator / KEY_FILE).exists() and _key_warnings(caplog) == []
    with Application.open(daemon_dir, durable=False, store=url) as daemon, _kinds(daemon) as kinds:
        (told,) = _key_warnings(caplog)
        assert "already holds objects" not in told, told  # a token: no daemon has served it
        kinds.environment("prod", {"DB": (SECRET, True)})
        live = kinds.execution(agent_id=kinds.agent(env_slugs=["prod"]).metadata.id)
        assert _run_keys(daemon)
    theirs = _hex(daemon_dir / KEY_FILE)
    for held in ("none", "another"):
        if held == "another":
            (operator / KEY_FILE).write_bytes(os.urandom(32))  # a stray key, of another store
        with Application.open(operator, durable=False, store=url, transient=True) as command, _kinds(command) as kinds:
            make_token(command, "acme", "viewer", f"made without the key ({held})")  # what needs no secret
            code, details = details_of(lambda: kinds.environment("dev", {"T": ("t0k3n", True)}))
            assert code == grpc.StatusCode.FAILED_PRECONDITION, details
            assert "this command holds no key of" in details and f"${KEY_FILE_ENV}" in details, details
            assert f"sealed with key {theirs}" in details or held == "none", details
            assert not (operator / KEY_FILE).exists() or held == "another", "no key file made"
    with Application.open(operator, durable=False, store=url, transient=True) as command, _kinds(command) as kinds:
        kinds.cancel(live.metadata.id, "ended by an operator's command")  # its run key goes, no key needed
        assert _run_keys(command) == []
    os.environ[KEY_FILE_ENV] = str(daemon_dir / KEY_FILE)  # the daemons' key given: it seals
    try:
        with Application.open(operator, durable=False, store=url, transient=True) as command, _kinds(command) as kinds:
            kinds.environment("dev", {"T": ("t0k3n", True)})
    finally:
        del os.environ[KEY_FILE_ENV]


def test_a_daemon_refused_for_its_key_says_so_once_in_its_log_and_names_the_reason(
    tmp_path: Path, stigmer_postgres_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon holding another key than the store's stayed silent: its refusals were a generic
    FAILED_PRECONDITION that no alert could tell apart, and its log said nothing."""
    url = stigmer_postgres_store_url
    with (
        Application.open(tmp_path / "one", durable=False, store=url) as one,
        Application.open(tmp_path / "two", durable=False, store=url) as two,
        _kinds(one) as first,
        _kinds(two) as second,
    ):
        first.environment("prod", {"DB": (SECRET, True)})
        caplog.set_level(logging.ERROR)
        for n in range(3):
            with pytest.raises(grpc.RpcError) as err:
                second.environment(f"dev{n}", {"T": ("t0k3n", True)})
            assert from_rpc_error(err.value).reason == "SECRET_KEY_MISMATCH"
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(logged) == 1 and "but the store's secrets are sealed with key" in logged[0], logged


def test_a_command_does_not_make_its_machines_own_key_the_stores(
    tmp_path: Path, stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving a local store in: an import run in process against the team's database, before any
    daemon had sealed a secret, sealed with the key file of the laptop's own data directory and
    recorded it, and every daemon was refused every secret from then on, told to copy a key that
    no daemon held."""
    url = stigmer_postgres_store_url
    laptop, daemon_dir = tmp_path / "laptop", tmp_path / "daemon"
    with Application.open(laptop, durable=False):  # the local store it used: its own key file
        pass
    assert (laptop / KEY_FILE).exists()
    with Application.open(laptop, durable=False, store=url, transient=True) as command, _kinds(command) as kinds:
        code, details = details_of(lambda: kinds.environment("prod", {"DB": (SECRET, True)}))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert f"it records no key yet, and the key file {laptop / KEY_FILE} is this machine's own" in details, details
        assert f"${KEY_FILE_ENV}" in details and "or make this call through a daemon" in details, details
        kinds.environment("plain", {"REGION": ("eu", False)})  # what needs no key is written
        assert _recorded(command) is None
    with Application.open(daemon_dir, durable=False, store=url) as daemon, _kinds(daemon) as kinds:
        kinds.environment("prod", {"DB": (SECRET, True)})  # the daemon's first secret records its key
        assert _recorded(daemon) == fingerprint((daemon_dir / KEY_FILE).read_bytes())
    monkeypatch.setenv(KEY_FILE_ENV, str(daemon_dir / KEY_FILE))  # given on purpose: the daemons' key
    with Application.open(laptop, durable=False, store=url, transient=True) as command, _kinds(command) as kinds:
        kinds.environment("dev", {"DB": (SECRET, True)})


def test_a_key_given_on_purpose_is_taken_by_a_command_on_a_store_recording_none(
    tmp_path: Path, stigmer_postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator preparing a team server's database before its daemons start, with the key
    file they will hold given in ``STIGMER_SECRET_KEY_FILE``, seals with it and records it."""
    url = stigmer_postgres_store_url
    key_file = tmp_path / "team.key"
    key_file.write_bytes(os.urandom(32))
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    with Application.open(tmp_path / "operator", durable=False, store=url, transient=True) as command:
        with _kinds(command) as kinds:
            kinds.environment("prod", {"DB": (SECRET, True)})
        assert _recorded(command) == fingerprint(key_file.read_bytes())
