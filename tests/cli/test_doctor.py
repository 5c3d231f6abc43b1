"""``stigmer doctor``: finds index entries that disagree with the objects, repairs them on request,
and leaves a data directory a daemon holds alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stigmer_core.application import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.store import keys

from .conftest import Stigmer, write

AGENT = """\
apiVersion: agentic.stigmer.ai/v1
kind: Agent
metadata: {name: Support Bot, labels: {tier: gold}}
spec: {description: Answers tickets}
"""


def _damage(data_dir: Path) -> None:
    """Lose the agent's label entries and leave a slug that names no object."""
    with Application.open(data_dir, durable=False) as app:
        with app.store.read() as txn:
            labels = [key for key, _ in txn.scan(keys.index_range("agents", "_label"))]

        def damage(txn: object) -> None:
            for key in labels:
                txn.delete(key)  # type: ignore[attr-defined]
            txn.put(keys.slug_key("agents", "local", "ghost"), b"agt-01arz3ndektsv4rrffq69g5fav")  # type: ignore[attr-defined]

        app.store.transact(damage)
    assert labels


def test_doctor_reports_and_repairs(stigmer: Stigmer, tmp_path: Path) -> None:
    stigmer.ok("apply", "-f", str(write(tmp_path / "agent.yaml", AGENT)))
    assert "agrees with the stored objects" in stigmer.ok("doctor")
    _damage(stigmer.data_dir)
    result = stigmer("doctor")
    assert result.code == 1
    assert "Agent" in result.out and "_label" in result.out and "_slug" in result.out, result.out
    assert "stigmer doctor --repair" in result.err
    assert "repaired 2 indexes" in stigmer.ok("doctor", "--repair")
    assert "agrees with the stored objects" in stigmer.ok("doctor")
    with Application.open(stigmer.data_dir, durable=False) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        page: Any = agents.list_page(labels={"tier": "gold"})
        assert [a.metadata.slug for a in page.entries] == ["support-bot"]


def _store_a_nul_tag(data_dir: Path) -> str:
    """A session whose tag holds NUL, as 0.1.0 stored one (a write now refuses it): its object and
    its index entries rewritten as that release wrote them. Returns its id."""
    from stigmer_core.api.agentic.session.v1 import session_pb2

    with Application.open(data_dir, durable=False) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        agent: Any = agents.list_page().entries[0]
        kind = app.registry.kind("Session")
        made: Any = KindClient(app.channel(), kind).create(
            session_pb2.Session(metadata={"name": "tagged", "tags": ["nightly"]}, spec={"agent_instance_id": agent.status.default_instance_id})
        )
        old = session_pb2.Session()
        old.CopyFrom(made)
        old.metadata.tags[:] = ["night\x00y"]  # as long as the tag it replaces: the org's bytes agree

        def rewrite(txn: Any) -> None:
            for key in kind.index_keys(made):
                txn.delete(key)
            for key in kind.index_keys(old):
                txn.put(key, b"")
            txn.put(keys.object_key(kind.key_prefix, old.metadata.id), old.SerializeToString())

        app.store.transact(rewrite)
        return str(old.metadata.id)


def test_doctor_lists_objects_a_write_would_refuse_as_they_are(stigmer: Stigmer, tmp_path: Path) -> None:
    """A tag holding NUL, which 0.1.0 stored and a write now refuses: such an object is read and
    deleted, but its update and its import are refused, and doctor said nothing of it."""
    stigmer.ok("apply", "-f", str(write(tmp_path / "agent.yaml", AGENT)))
    session_id = _store_a_nul_tag(stigmer.data_dir)
    result = stigmer("doctor")
    assert result.code == 1, result.out
    assert "1 stored objects would be refused" in result.out and session_id in result.out, result.out
    assert "NUL character" in result.out and "Session" in result.out, result.out
    assert "agrees with the stored objects" in result.out  # nothing for --repair to do
    assert "until the field named changes" in result.err, result.err
    with Application.open(stigmer.data_dir, durable=False) as app:  # the way out the message names
        from stigmer_core.api.agentic.session.v1 import session_pb2

        sessions = KindClient(app.channel(), app.registry.kind("Session"))
        held: Any = sessions.get(session_id)
        fixed = session_pb2.Session()
        fixed.CopyFrom(held)
        fixed.metadata.tags[:] = ["nightly"]
        assert list(sessions.update(fixed).metadata.tags) == ["nightly"]
    assert "agrees with the stored objects" in stigmer.ok("doctor")


def test_doctor_leaves_a_directory_a_daemon_holds_alone(stigmer: Stigmer, daemon: str) -> None:
    message = stigmer.fails("doctor", "--reindex")
    assert "holds" in message and "stigmer local stop" in message


def test_doctor_reports_and_repairs_org_usage_counters(stigmer: Stigmer, tmp_path: Path) -> None:
    from stigmer_core.kinds import usage

    stigmer.ok("apply", "-f", str(write(tmp_path / "agent.yaml", AGENT)))
    assert "every org's usage counter agrees" in stigmer.ok("doctor")
    with Application.open(stigmer.data_dir, durable=False) as app:
        with app.store.read() as txn:
            right = txn.get(keys.org_usage_key("local"))
        app.store.transact(lambda txn: txn.put(keys.org_usage_key("local"), usage.encode(1, 1)))
    assert right is not None and usage.decode(right)[0] == 2  # the agent and its default instance
    result = stigmer("doctor")
    assert result.code == 1
    objects, size = usage.decode(right)
    assert "local" in result.out and "1 / 1" in result.out and f"{objects} / {size}" in result.out, result.out
    assert "1 org usage counters disagree" in result.err
    assert "repaired 0 indexes and 1 org usage counters" in stigmer.ok("doctor", "--repair")
    assert "every org's usage counter agrees" in stigmer.ok("doctor")
    with Application.open(stigmer.data_dir, durable=False) as app, app.store.read() as txn:
        assert txn.get(keys.org_usage_key("local")) == right


def test_doctor_checks_and_repairs_a_team_servers_database_while_its_daemon_serves(
    stigmer: Stigmer, stigmer_postgres_store_url: str, tmp_path: Path
) -> None:
    """The team server's daemons keep serving: each repair is one write transaction, taking the
    revision lock as their writes do. ``--store`` names the database (as for ``secrets rotate-key``)."""
    from stigmer_core.kinds import usage

    stigmer.store = stigmer_postgres_store_url
    stigmer.start()
    stigmer.ok("apply", "-f", str(write(tmp_path / "agent.yaml", AGENT)))
    with Application.open(tmp_path / "other", store=stigmer_postgres_store_url, durable=False) as app:
        app.store.transact(lambda txn: txn.put(keys.org_usage_key("local"), usage.encode(1, 1)))
    stigmer.store = None  # from here on the database is named by --store alone
    store = ("--store", stigmer_postgres_store_url)
    result = stigmer("doctor", *store)
    assert result.code == 1 and "1 org usage counters disagree" in result.err, result.err
    assert "repaired 0 indexes and 1 org usage counters" in stigmer.ok("doctor", "--repair", *store)
    assert "every org's usage counter agrees" in stigmer.ok("doctor", *store)
    # without it, doctor would check the daemon's data directory, which holds no store: said, naming --store
    said = stigmer.fails("doctor")
    assert "holds no store" in said and "--store postgresql://" in said, said


def test_a_data_directory_without_a_store_is_said_and_left_without_one(stigmer: Stigmer, tmp_path: Path) -> None:
    """Checked on a new, empty store, doctor said every index agreed and org delete that the org
    held nothing, while the store meant was never looked at: with the CLI logged in to a team
    server, that server's database, which neither command goes through."""
    for command in (("doctor",), ("org", "delete", "acme", "--dry-run")):
        said = stigmer.fails(*command)
        assert f"{stigmer.data_dir} holds no store, so `stigmer {' '.join(command[:2])}` has nothing to work on" in said
        assert "--store postgresql://" in said and "remote server" not in said
    assert not (stigmer.data_dir / "data.mdb").exists()

    stigmer.home.mkdir(parents=True, exist_ok=True)
    stigmer.home.joinpath("config.yaml").write_text(
        "backend: {type: remote}\nremote: {endpoint: 'team.example:7443'}\n"
    )
    said = stigmer.fails("doctor")
    assert (
        "the CLI's backend here is the remote server team.example:7443, which `stigmer doctor` does not go through"
        in said
    )
    assert not (stigmer.data_dir / "data.mdb").exists()
