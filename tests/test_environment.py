"""Environment: secrets encrypted at rest, redacted in every response, export and log line."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as env_grpc
from stigmer_core.api.commons.apiresource.v1 import event_pb2, metadata_pb2
from stigmer_core.store import keys
from stigmer_plugins.environment import has_secrets, redact_secrets, secret_context
from stigmer_plugins.secrets import KEY_FILE, REDACTED, SecretBox, box

# '-' is not in the base64 alphabet, so no ciphertext can contain these by chance.
SECRET = "clear-Secret-7f3a-Q"
NEW_SECRET = "clear-Rotated-91bd-Z"


def _env(name: str = "prod", **data: tuple[str, bool]) -> environment_pb2.Environment:
    env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name))
    for key, (value, secret) in data.items():
        env.spec.data[key].CopyFrom(environment_pb2.EnvironmentValue(value=value, is_secret=secret, description=key))
    return env


def _stored(app: Application, env_id: str) -> environment_pb2.Environment:
    with app.store.read() as txn:
        raw = txn.get(keys.object_key("environments", env_id))
    assert raw is not None
    return environment_pb2.Environment.FromString(raw)


def _stubs(channel: grpc.Channel) -> tuple[Any, Any]:
    return env_grpc.EnvironmentCommandControllerStub(channel), env_grpc.EnvironmentQueryControllerStub(channel)


def _error(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10)
    return err.value


def test_secrets_appear_in_no_response_store_value_or_log_line(
    stigmer_app: Application,
    stigmer_channel: grpc.Channel,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    commands, queries = _stubs(stigmer_channel)
    responses: list[Any] = []
    errors: list[grpc.RpcError] = []

    created = commands.create(_env(TOKEN=(SECRET, True), REGION=("eu-west-1", False)), timeout=10)
    responses.append(created)
    env_id = created.metadata.id
    responses.append(queries.get(environment_pb2.EnvironmentId(value=env_id), timeout=10))
    responses.append(queries.list(environment_pb2.ListEnvironmentsRequest(), timeout=10))
    responses.append(queries.list(environment_pb2.ListEnvironmentsRequest(org="local", page_size=1), timeout=10))
    responses.append(queries.list(environment_pb2.ListEnvironmentsRequest(labels={"tier": "a"}), timeout=10))
    responses.append(queries.getByReference(metadata_pb2.ApiResourceReference(slug="prod"), timeout=10))
    edited = environment_pb2.Environment()
    edited.CopyFrom(created)
    edited.metadata.labels["tier"] = "a"
    responses.append(commands.update(edited, timeout=10))  # the marker keeps the secret
    responses.append(queries.list(environment_pb2.ListEnvironmentsRequest(labels={"tier": "a"}), timeout=10))
    responses.append(commands.apply(_env(TOKEN=(SECRET, True), REGION=("eu-west-1", False)), timeout=10))
    responses.append(commands.apply(_env(TOKEN=(NEW_SECRET, True), REGION=("eu-west-1", False)), timeout=10))
    wrong = _env(TOKEN=(REDACTED, False), OTHER=(SECRET, True))  # a stored secret made plain by its marker
    wrong.metadata.id = env_id
    errors.append(_error(commands.update, wrong))
    errors.append(_error(commands.create, _env(TOKEN=(SECRET, True), BAD=("x" * 65537, True))))
    errors.append(_error(commands.create, _env(TOKEN=(SECRET, True))))  # slug taken
    copy = commands.create(_env("copy", TOKEN=(SECRET, True)), timeout=10)
    responses.append(copy)

    for response in responses:
        text = str(response)
        assert SECRET not in text and NEW_SECRET not in text, text
        assert SECRET.encode() not in response.SerializeToString()
        assert NEW_SECRET.encode() not in response.SerializeToString()
    shown = [r for r in responses if isinstance(r, environment_pb2.Environment)]
    shown += [e for r in responses if isinstance(r, environment_pb2.EnvironmentList) for e in r.entries]
    assert len(shown) >= 10
    for env in shown:
        assert env.spec.data["TOKEN"].value == REDACTED and env.spec.data["TOKEN"].is_secret
        assert env.spec.data["TOKEN"].description == "TOKEN"
    for error in errors:
        assert SECRET not in (error.details() or "") and NEW_SECRET not in (error.details() or "")
    assert [e.code() for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 2 + [grpc.StatusCode.ALREADY_EXISTS]

    # the raw store (objects, indexes, event log) holds ciphertext only
    with stigmer_app.store.read() as txn:
        everything = list(txn.scan(b""))
    assert any(key.startswith(b"e/") for key, _ in everything)
    for key, value in everything:
        assert SECRET.encode() not in key + value and NEW_SECRET.encode() not in key + value, key
    secrets = box(stigmer_app.registry)
    for env_id_, clear in ((env_id, NEW_SECRET), (copy.metadata.id, SECRET)):
        sealed = _stored(stigmer_app, env_id_).spec.data["TOKEN"].value
        assert SecretBox.is_encrypted(sealed)
        assert secrets.decrypt(sealed, secret_context(env_id_, "TOKEN")) == clear
    deleted = commands.delete(environment_pb2.EnvironmentId(value=env_id), timeout=10)
    assert deleted.spec.data["TOKEN"].value == REDACTED
    assert SECRET.encode() not in deleted.SerializeToString()
    assert NEW_SECRET.encode() not in deleted.SerializeToString()

    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert SECRET not in logged and NEW_SECRET not in logged


def test_marker_keeps_the_ciphertext_and_a_new_value_is_sealed_again(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    commands, queries = _stubs(stigmer_channel)
    created = commands.create(_env(TOKEN=(SECRET, True), MODE=("fast", False)), timeout=10)
    env_id = created.metadata.id
    first = _stored(stigmer_app, env_id).spec.data["TOKEN"].value

    # sending back what get returned (the marker) changes nothing at all
    same = commands.update(created, timeout=10)
    assert same.metadata.resource_version == created.metadata.resource_version
    assert _stored(stigmer_app, env_id).spec.data["TOKEN"].value == first
    # the same clear value again: the stored ciphertext stays, nothing is written
    again = commands.apply(_env(TOKEN=(SECRET, True), MODE=("fast", False)), timeout=10)
    assert again == same
    assert _stored(stigmer_app, env_id).spec.data["TOKEN"].value == first

    # another field changes: the marker keeps the stored ciphertext byte for byte
    edited = environment_pb2.Environment()
    edited.CopyFrom(created)
    edited.spec.data["MODE"].value = "safe"
    moved = commands.update(edited, timeout=10)
    assert moved.metadata.resource_version > created.metadata.resource_version
    assert _stored(stigmer_app, env_id).spec.data["TOKEN"].value == first

    # a new clear value is encrypted afresh, bound to this environment and key
    edited.CopyFrom(moved)
    edited.spec.data["TOKEN"].value = NEW_SECRET
    edited = commands.update(edited, timeout=10)
    rotated = _stored(stigmer_app, env_id).spec.data["TOKEN"].value
    assert rotated != first and SecretBox.is_encrypted(rotated)
    secrets = box(stigmer_app.registry)
    assert secrets.decrypt(rotated, f"{env_id}/TOKEN") == NEW_SECRET
    with pytest.raises(Exception, match="does not decrypt"):
        secrets.decrypt(rotated, f"{env_id}/MODE")

    # a secret made plain needs its clear value; the marker is refused
    plain = environment_pb2.Environment()
    plain.CopyFrom(edited)
    plain.spec.data["TOKEN"].value = REDACTED
    plain.spec.data["TOKEN"].is_secret = False
    error = _error(commands.update, plain)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(error).violations] == ['spec.data["TOKEN"].value']  # type: ignore[attr-defined]
    plain.spec.data["TOKEN"].value = "now-public"
    shown = commands.update(plain, timeout=10)
    assert shown.spec.data["TOKEN"].value == "now-public" and not shown.spec.data["TOKEN"].is_secret
    assert _stored(stigmer_app, env_id).spec.data["TOKEN"].value == "now-public"
    got = queries.get(environment_pb2.EnvironmentId(value=env_id), timeout=10)
    assert got == shown


def test_the_marker_without_a_stored_secret_leaves_it_unset(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """A redacted export restores into an empty store: the secret is kept unset, and listed, until set."""
    commands, queries = _stubs(stigmer_channel)
    created = commands.create(_env(TOKEN=(REDACTED, True), REGION=("eu", False)), timeout=10)
    env_id = created.metadata.id
    assert created.spec.data["TOKEN"].value == REDACTED and created.spec.data["TOKEN"].is_secret
    assert list(created.status.unset_secrets) == ["TOKEN"]
    stored = _stored(stigmer_app, env_id).spec.data["TOKEN"]
    assert stored.is_secret and stored.value == ""

    # the same document again (a second import) changes nothing
    again = commands.apply(_env(TOKEN=(REDACTED, True), REGION=("eu", False)), timeout=10)
    assert again == created
    assert queries.get(environment_pb2.EnvironmentId(value=env_id), timeout=10) == created

    # the marker as a plain value would pass the unset secret off as its value
    plain = _env(TOKEN=(REDACTED, False), REGION=("eu", False))
    error = _error(commands.apply, plain)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(error).violations] == ['spec.data["TOKEN"].value']  # type: ignore[attr-defined]

    # a clear value sets it; the marker then keeps it
    updated = commands.apply(_env(TOKEN=(SECRET, True), REGION=("eu", False)), timeout=10)
    assert updated.metadata.resource_version > created.metadata.resource_version
    assert list(updated.status.unset_secrets) == [] and updated.spec.data["TOKEN"].value == REDACTED
    sealed = _stored(stigmer_app, env_id).spec.data["TOKEN"].value
    assert box(stigmer_app.registry).decrypt(sealed, secret_context(env_id, "TOKEN")) == SECRET
    kept = commands.apply(_env(TOKEN=(REDACTED, True), REGION=("eu", False)), timeout=10)
    assert kept == updated
    assert _stored(stigmer_app, env_id).spec.data["TOKEN"].value == sealed


def test_export_holds_no_secret_and_the_key_file_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Application.open(data_dir, durable=False) as app:
        commands, _ = _stubs(app.channel())
        commands.create(_env(TOKEN=(SECRET, True), REGION=("eu-west-1", False)), timeout=10)
    assert stat.S_IMODE((data_dir / KEY_FILE).stat().st_mode) == 0o600
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIGMER_")}
    env["STIGMER_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli", "export", "environments", "-A", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "eu-west-1" in done.stdout and REDACTED in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_an_environment_without_secrets_is_answered_and_logged_as_stored(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    """``has_secrets`` lets such an environment skip its redacted copy: what is stored, answered
    and logged is then one and the same, and it answers True for every environment redaction changes."""
    commands, queries = _stubs(stigmer_channel)
    plain = commands.create(_env("plain", REGION=("eu-west-1", False), TIER=("gold", False)), timeout=10)
    empty = commands.create(_env("empty"), timeout=10)
    for created in (plain, empty):
        stored = _stored(stigmer_app, created.metadata.id)
        assert created == stored
        assert queries.get(environment_pb2.EnvironmentId(value=created.metadata.id), timeout=10) == stored
    with stigmer_app.store.read() as txn:
        logged = [event_pb2.ResourceEvent.FromString(value) for key, value in txn.scan(keys.EVENTS)]
    for created in (plain, empty):
        (event,) = [e for e in logged if e.id == created.metadata.id]
        assert environment_pb2.Environment.FromString(event.object) == created

    examples = [
        _env(),
        _env(REGION=("eu", False)),
        _env(REGION=(REDACTED, False)),
        _env(TOKEN=(SECRET, True)),
        _env(TOKEN=(REDACTED, True)),
        _env(TOKEN=("", True), REGION=("eu", False)),
    ]
    for env in examples:
        redacted = environment_pb2.Environment()
        redacted.CopyFrom(env)
        redact_secrets(redacted)
        if redacted != env:
            assert has_secrets(env), env
        assert has_secrets(env) == any(item.is_secret for item in env.spec.data.values())
