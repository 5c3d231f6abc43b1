"""The envelope a create stores is the server's: ``apiVersion`` is the kind's, and
``metadata.version`` (a content version) only what a versioned kind's steps stamp."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.kind_client import KindClient


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Application]:
    with Application.open(tmp_path / "data", durable=False) as app:
        yield app


def test_the_stored_api_version_is_the_kinds_whatever_was_sent(app: Application) -> None:
    envs = KindClient(app.channel(), app.registry.kind("Environment"))
    expected = app.registry.kind("Environment").api_version
    for sent in ("iam.stigmer.ai/v1", ""):
        spoofed = environment_pb2.Environment(api_version=sent)
        spoofed.metadata.name = f"prod {len(sent)}"
        made: Any = envs.create(spoofed)
        assert made.api_version == expected
        assert envs.get(made.metadata.id).api_version == expected  # type: ignore[attr-defined]


def test_a_claimed_content_version_is_not_kept(app: Application) -> None:
    envs = KindClient(app.channel(), app.registry.kind("Environment"))
    claimed = environment_pb2.Environment()
    claimed.metadata.name = "prod"
    claimed.metadata.version.id = "f" * 64
    claimed.metadata.version.message = "approved by security"
    made: Any = envs.create(claimed)
    assert not made.metadata.HasField("version")
    skills = KindClient(app.channel(), app.registry.kind("Skill"))
    skill = skill_pb2.Skill()
    skill.metadata.name = "calc"
    skill.metadata.version.id = "f" * 64
    skill.spec.skill_md = "# Calc"
    pushed: Any = skills.create(skill)
    assert pushed.metadata.version.id not in ("", "f" * 64), "the server's content hash"
