"""LMDB keeps run keys in a file beside the store (``run-keys``); what that file's system calls
raise was answered INTERNAL ("a bug"): an execution create on a full disk or with no file
descriptor left, and a cancel that had committed (its key's erase, after the commit, failed).

The file here is made unwritable for real by putting a directory where it goes: its open fails
as a full disk's write or a missing descriptor does, with an ``OSError``."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stigmer_core import Application
from stigmer_plugins.secrets import RUN_KEYS_FILE
from tests.agent_execution_support import CANCELLED, Kinds, details_of


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    with Application.open(tmp_path / "data", durable=False) as opened:
        yield opened


def _blocked(app: Application) -> Path:
    """The run-keys file made unopenable (a directory in its place); returns it, to restore."""
    path = Path(app.store.path) / RUN_KEYS_FILE  # type: ignore[attr-defined]
    kept = path.with_name("run-keys.kept")
    if path.exists():
        path.rename(kept)
    path.mkdir()
    return kept


def _restored(app: Application, kept: Path) -> None:
    path = Path(app.store.path) / RUN_KEYS_FILE  # type: ignore[attr-defined]
    shutil.rmtree(path)
    if kept.exists():
        kept.rename(path)


def test_an_execution_whose_run_key_cannot_be_written_is_unavailable_and_nothing_is_stored(
    app: Application,
) -> None:
    kinds = Kinds.on(app, app.channel())
    agent = kinds.agent()
    kept = _blocked(app)
    code, said = details_of(lambda: kinds.execution(agent_id=agent.metadata.id, runtime_env={"T": ("s3", True)}))
    assert code == grpc.StatusCode.UNAVAILABLE, said
    assert "run keys" in said and "could not be written" in said and "nothing was written" in said, said
    assert list(kinds.executions.list_all()) == []
    _restored(app, kept)
    made = kinds.execution(agent_id=agent.metadata.id, runtime_env={"T": ("s3", True)})
    assert made.metadata.id


def test_a_cancel_whose_key_erase_fails_after_its_commit_is_answered_as_done(
    app: Application, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = Kinds.on(app, app.channel())
    agent = kinds.agent()
    run = kinds.execution(agent_id=agent.metadata.id, runtime_env={"T": ("s3", True)})
    kept = _blocked(app)
    with caplog.at_level(logging.WARNING):
        cancelled = kinds.cancel(run.metadata.id, "stop")  # committed: not INTERNAL
    assert cancelled.status.phase == CANCELLED
    assert kinds.executions.get(run.metadata.id).status.phase == CANCELLED
    assert "after a committed write" in caplog.text and "the write stands" in caplog.text
    _restored(app, kept)
