"""An export taken while others write: what it holds imports, whatever the interleaving.

Each kind is listed in reads of its own, so a write can land between two
kinds' lists. These tests put one there, through the same store, at the
moment the export lists a given kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stigmer_core import config, errors
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.cli import backup
from stigmer_core.cli.calls import KindCalls
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.session import Session

from .conftest import Stigmer


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.setenv("STIGMER_HOME", str(tmp_path / "home"))
    opened = Session(config.resolve(backend="local", data_dir=tmp_path / "data"))
    try:
        yield opened
    finally:
        opened.close()


def _when_listed(monkeypatch: pytest.MonkeyPatch, kind_name: str, write: Callable[[], None]) -> list[str]:
    """Run ``write`` once, just before the export first lists ``kind_name``; the kinds in the order listed."""
    listed: list[str] = []
    real = KindCalls.iterate

    def iterate(self: KindCalls, **kwargs: Any) -> Any:
        if self.kind.name not in listed:
            listed.append(self.kind.name)
            if self.kind.name == kind_name:
                write()
        return real(self, **kwargs)

    monkeypatch.setattr(KindCalls, "iterate", iterate)
    return listed


def _create(session: Session, kind: str, obj: Any) -> Any:
    return session.calls(session.catalog.kind(kind)).call("create", obj)


def test_objects_made_between_two_kinds_lists_come_with_what_they_need(
    session: Session, monkeypatch: pytest.MonkeyPatch, stigmer: Stigmer, tmp_path: Path
) -> None:
    """An agent, its default instance and a session on it, made while the export was between
    agents and instances: listed agents first, the export held the instance and the session
    without their agent, and importing it failed."""
    made: list[str] = []

    def write() -> None:
        agent = _create(session, "Agent", agent_pb2.Agent(metadata={"name": "Late"}))
        chat = session_pb2.Session(metadata={"name": "Late chat"})
        chat.spec.agent_instance_id = agent.status.default_instance_id
        made.append(metadata(_create(session, "Session", chat)).id)
        made.append(agent.metadata.id)

    listed = _when_listed(monkeypatch, "AgentInstance", write)
    kinds = backup.exportable(session.catalog, [])
    with backup.collect(session, kinds, org="") as export:
        assert export.missing == []
        assert listed.index("Session") < listed.index("AgentInstance") < listed.index("Agent")
        exported = {(entry.kind, entry.slug) for entry in export.entries}
        assert exported == {("Agent", "late"), ("AgentInstance", "late-default")}  # the session came after its list
        text = export.text(session.catalog)
    session.close()
    imported = stigmer("import", "--data-dir", str(tmp_path / "restored"), input=text)
    assert imported.code == 0 and imported.out.startswith("imported 2 of 2 resources"), imported


def test_what_a_delete_during_the_export_took_with_its_owner_is_left_out_with_a_note(
    session: Session, monkeypatch: pytest.MonkeyPatch, stigmer: Stigmer, tmp_path: Path
) -> None:
    """An agent deleted between the lists of its instance and of agents: the cascade took the
    instance (and a session on it) too. The export failed, every time on a server where anyone
    deleted while it ran; now what was deleted is left out, said, and the rest imports."""
    kept = _create(session, "Agent", agent_pb2.Agent(metadata={"name": "Kept"}))
    agent = _create(session, "Agent", agent_pb2.Agent(metadata={"name": "Doomed"}))
    chat = session_pb2.Session(metadata={"name": "Doomed chat"})
    chat.spec.agent_instance_id = agent.status.default_instance_id
    chat_id = metadata(_create(session, "Session", chat)).id

    def delete() -> None:  # the agent and, by cascade, its instance and the session, both listed already
        session.calls(session.catalog.kind("Agent")).delete(agent.metadata.id)

    _when_listed(monkeypatch, "Agent", delete)
    with backup.collect(session, backup.exportable(session.catalog, []), org="") as export:
        assert export.missing == []
        assert {(entry.kind, entry.slug) for entry in export.entries} == {
            ("Agent", "kept"),
            ("AgentInstance", "kept-default"),
        }
        assert sorted(export.notes) == [
            f"AgentInstance local/doomed-default ({agent.status.default_instance_id}): deleted while the export "
            f"ran, as was the Agent {agent.metadata.id} it names: left out",
            f"Session local/doomed-chat ({chat_id}): deleted while the export ran, as was the AgentInstance "
            f"{agent.status.default_instance_id} it names: left out",
        ]
        text = export.text(session.catalog)
    session.close()
    imported = stigmer("import", "--data-dir", str(tmp_path / "restored"), input=text)
    assert imported.code == 0 and imported.out.startswith("imported 2 of 2 resources"), imported
    assert kept.metadata.id in text


def test_what_names_a_deleted_object_and_is_still_stored_fails_the_export() -> None:
    """Only what is gone itself is dropped: an object still stored that names one deleted (or one
    whose check failed) would import broken, so the export names it and fails, as before."""
    entry = backup.Entry(
        "Session", "local", "chat", "ses-1", (("spec.agentInstanceId", "AgentInstance", "ain-9"),), 0, 1
    )
    named = backup.Entry("Other", "local", "x", "oth-1", (("spec.sessionId", "Session", "ses-1"),), 0, 1)
    kept, gone, dropped = backup.dangling([entry, named], {"Session", "AgentInstance", "Other"})
    assert (kept, dropped) == ([], [])
    assert [missing.what for missing in gone] == ["Session local/chat (ses-1)", "Other local/x (oth-1)"]
    assert "which is not in the export (deleted while it was written?); export again" in gone[0].reason
    assert "which is left out itself (named above)" in gone[1].reason
    kept, gone, dropped = backup.dangling(
        [entry, named], {"Session", "AgentInstance", "Other"}, deleted_since=lambda e: e.id == "ses-1"
    )
    assert [e.id for e, _ in dropped] == ["ses-1"]
    assert [missing.what for missing in gone] == ["Other local/x (oth-1)"], "still stored: named"
    assert "deleted while it was written?" in gone[0].reason


def test_a_kind_whose_list_fails_part_way_is_left_out_whole_and_named(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects are spooled as they are listed: a list that broke after its first page must not
    leave the part it had delivered in the export, as if that were the whole kind."""
    for name in ("First", "Second"):
        _create(session, "Agent", agent_pb2.Agent(metadata={"name": name}))
    real = KindCalls.iterate

    def iterate(self: KindCalls, **kwargs: Any) -> Any:
        listing = real(self, **kwargs)
        if self.kind.name != "Agent":
            return listing

        def broken() -> Any:
            yield next(listing)
            raise errors.Unavailable("the server went away")

        return broken()

    monkeypatch.setattr(KindCalls, "iterate", iterate)
    kinds = backup.exportable(session.catalog, [])
    with backup.collect(session, kinds, org="", retry_seconds=0) as export:
        assert export.entries == []  # the agents' instances name agents the export does not hold
        kind, *instances = export.missing
        assert (kind.what, kind.reason) == ("kind 'agent'", "the server went away")
        assert sorted(m.what.split(" (")[0] for m in instances) == [
            "AgentInstance local/first-default",
            "AgentInstance local/second-default",
        ]
        assert all(m.reason.endswith("which could not be exported (named above)") for m in instances)


def _failing_first(monkeypatch: pytest.MonkeyPatch, kind_name: str, failures: int) -> list[int]:
    """``kind_name``'s list refused UNAVAILABLE part way ``failures`` times, then served; the
    attempts made, counted."""
    real = KindCalls.iterate
    attempts = [0]

    def iterate(self: KindCalls, **kwargs: Any) -> Any:
        listing = real(self, **kwargs)
        if self.kind.name != kind_name:
            return listing
        attempts[0] += 1
        if attempts[0] > failures:
            return listing

        def broken() -> Any:
            yield next(listing)
            raise errors.Unavailable("the database does not answer this daemon")

        return broken()

    monkeypatch.setattr(KindCalls, "iterate", iterate)
    return attempts


def test_a_kind_refused_unavailable_for_a_moment_is_listed_again_whole(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restarting under an `export --all` gave every kind listed meanwhile up at its
    first UNAVAILABLE, though the server said to retry."""
    for name in ("First", "Second"):
        _create(session, "Agent", agent_pb2.Agent(metadata={"name": name}))
    attempts = _failing_first(monkeypatch, "Agent", failures=1)
    with backup.collect(session, backup.exportable(session.catalog, []), org="", retry_seconds=1) as export:
        assert export.missing == [] and attempts == [2]
        assert sorted(e.slug for e in export.entries if e.kind == "Agent") == ["first", "second"]
        assert len([e for e in export.entries if e.kind == "AgentInstance"]) == 2


def test_objects_left_out_for_one_kinds_failure_are_counted_past_a_few(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every instance of an agent list that failed was named on a line of its own: thousands of
    lines for one cause, already said."""
    count = backup.FOLDED_PAST + 2
    for n in range(count):
        _create(session, "Agent", agent_pb2.Agent(metadata={"name": f"agent {n}"}))
    _failing_first(monkeypatch, "Agent", failures=100)
    with backup.collect(session, backup.exportable(session.catalog, []), org="", retry_seconds=0) as export:
        kind, instances = export.missing
        assert (kind.what, kind.reason) == ("kind 'agent'", "the database does not answer this daemon")
        assert instances.what.startswith(f"{count} AgentInstance objects (the first: AgentInstance local/"), instances
        assert instances.reason == "each names an object of kind Agent, which could not be exported (named above)", instances
