"""Encryption at rest: one key per data directory, bound ciphertexts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stigmer_core import Application, FailedPrecondition
from stigmer_plugins.secrets import KEY_FILE, SecretBox, box


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        token = box(app.registry).encrypt("hunter2", "env-1/PASSWORD")
    key = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "hunter2" not in token and SecretBox.is_encrypted(token)
    with Application.open(tmp_path / "data", durable=False) as again:
        assert box(again.registry).decrypt(token, "env-1/PASSWORD") == "hunter2"


def test_ciphertext_is_bound_to_its_place_and_key(tmp_path: Path) -> None:
    one = SecretBox.for_data_dir(tmp_path)
    token = one.encrypt("value", "env-1/A")
    with pytest.raises(FailedPrecondition):
        one.decrypt(token, "env-2/A")
    (tmp_path / "other").mkdir()
    with pytest.raises(FailedPrecondition):
        SecretBox.for_data_dir(tmp_path / "other").decrypt(token, "env-1/A")
