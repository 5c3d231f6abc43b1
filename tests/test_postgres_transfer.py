"""The migration story: a store moves from LMDB to PostgreSQL and back through
``stigmer export`` / ``stigmer import``, byte-identical."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.conftest import Stigmer
from tests.cli.test_backup_all_kinds import _fill


def test_export_import_moves_a_store_lmdb_to_postgresql_and_back_byte_identical(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    source = Stigmer(tmp_path / "lmdb")
    _fill(source, tmp_path)
    first = source.ok("export", "--all", "-A")
    assert len(list(yaml.safe_load_all(first))) == 12

    team = Stigmer(tmp_path / "team")
    team.home.mkdir(parents=True)
    (team.home / "config.yaml").write_text(f"store: {stigmer_postgres_store_url}\n")
    assert team.ok("import", input=first).strip().startswith("imported 12 of 12 resources")
    second = team.ok("export", "--all", "-A")
    assert second == first
    # the team store really is the database: an LMDB store in its data directory would be empty
    assert not (team.data_dir / "data.mdb").exists()

    back = Stigmer(tmp_path / "back")
    assert back.ok("import", input=second).strip().startswith("imported 12 of 12 resources")
    assert back.ok("export", "--all", "-A") == first


def test_a_laptop_moves_to_a_team_server_on_postgresql(tmp_path: Path, stigmer_postgres_store_url: str) -> None:
    """After `login`, `import --to-org` left an agent whose references name org 'local' behind
    (refused in the new org), and `import --data-dir NEW` restored into the team server instead."""
    from tests.cli.test_transfer import NAMING_ITS_ORG

    team = Stigmer(tmp_path / "team")
    team.home.mkdir(parents=True)
    (team.home / "config.yaml").write_text(
        yaml.safe_dump({"store": stigmer_postgres_store_url, "server": {"require_auth": True}})
    )
    admin = team.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "first").strip()
    me = Stigmer(tmp_path / "me")
    try:
        daemon = team.start().address
        me.ok("apply", "-f", "-", input=NAMING_ITS_ORG)
        backup = me.ok("export", "--all")
        me.ok("login", "--endpoint", daemon, "--token", admin)
        moved = me.ok("import", "--to-org", "acme", input=backup)
        assert "imported 4 of 4 resources" in moved, moved
        agent = yaml.safe_load(me.ok("get", "agent", "support-bot", "-o", "yaml"))
        assert agent["metadata"]["org"] == "acme"
        assert agent["spec"]["environmentRefs"] == [{"org": "acme", "kind": "Environment", "slug": "prod"}]
        assert "support-bot-default" in me.ok("get", "agentinstance")

        restored = tmp_path / "restored"
        assert "imported 4 of 4 resources" in me.ok("import", "--data-dir", str(restored), input=backup)
        assert me.ok("export", "--all", "--data-dir", str(restored)) == backup
    finally:
        team.cleanup()


def test_a_skills_every_version_moves_lmdb_to_a_postgresql_daemon_and_back(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """Only a skill's current version was exported: on the team server an agent pinning an older
    one by tag or hash pointed at nothing, and the skill's history was gone."""
    from tests.cli.test_skill_history import fill, seen

    source = Stigmer(tmp_path / "lmdb")
    made = fill(source)
    before = seen(source)
    backup = source.ok("export", "--all")

    team = Stigmer(tmp_path / "team")
    team.home.mkdir(parents=True)
    (team.home / "config.yaml").write_text(f"store: {stigmer_postgres_store_url}\n")
    try:
        remote = ("--backend", "remote", "--endpoint", team.start().address)
        assert source.ok("import", *remote, input=backup).strip() == "imported 3 of 3 resources (3 created)"
        assert seen(source, *remote) == before
        assert before["pinned"] == made[:2] and before["by_tag"]["beta"] == made[1]
        assert source.ok("import", *remote, input=backup).strip() == "imported 3 of 3 resources (3 unchanged)"
        assert seen(source, *remote) == before
        moved = source.ok("export", "--all", *remote)
        assert moved == backup
    finally:
        team.cleanup()

    back = Stigmer(tmp_path / "back")
    assert back.ok("import", input=moved).strip() == "imported 3 of 3 resources (3 created)"
    assert seen(back) == before
    assert back.ok("export", "--all") == backup


def test_an_import_into_a_team_server_whose_database_refuses_writes_stops_at_once(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A standby, or default_transaction_read_only: each document was tried and refused in turn
    (thousands of lines for a large backup, each waiting on the database), ending "imported 0 of N"."""
    import psycopg

    from tests.cli.test_transfer import NAMING_ITS_ORG
    from tests.test_postgres_store import _daemon_role

    with _daemon_role(stigmer_postgres_store_url) as (url, admin_conninfo, role):
        team = Stigmer(tmp_path / "team")
        team.home.mkdir(parents=True)
        (team.home / "config.yaml").write_text(yaml.safe_dump({"store": url}))
        me = Stigmer(tmp_path / "me")
        try:
            daemon = team.start().address
            me.ok("apply", "-f", "-", input=NAMING_ITS_ORG)
            backup = me.ok("export", "--all")
            with psycopg.connect(admin_conninfo, autocommit=True) as admin:
                admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            remote = ("--backend", "remote", "--endpoint", daemon)
            said: list[str] = []
            for _ in range(6):  # a connection the terminate broke answers first that it was lost: stopped too
                result = me("import", *remote, input=backup)
                assert result.code == 1, result
                said.append(result.err)
                if "refuses writes" in result.err:
                    break
            last = said[-1]
            assert "refuses writes" in last, said
            assert "import stopped: 0 of 4 resources were imported before it" in last, last
            assert last.count("refuses writes") == 1, last  # one document tried, not every one
            assert "cannot reach" not in last, last
        finally:
            team.cleanup()
