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
