"""What the CLI says when a team server refuses it: an org it does not know for the token, a role
without admin access, an export that failed. Real commands against a real server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from stigmer_core import Application
from stigmer_core.server import Server
from tests.auth_support import make_token, seed_org

from .conftest import Result, Stigmer

ALPHA = "alpha"
ENVIRONMENT = "apiVersion: agentic.stigmer.ai/v1\nkind: Environment\nmetadata: {name: cli-env}\nspec: {}\n"


@attrs.frozen
class Team:
    """A server requiring tokens, with org alpha seeded, and a token of every role there."""

    stigmer: Stigmer
    address: str
    tokens: dict[str, str]
    seeded: dict[str, Any]

    def __call__(self, *args: str, role: str = "admin", input: str | None = None) -> Result:
        remote = ("--backend", "remote", "--endpoint", self.address)
        return self.stigmer(*args, *remote, input=input, env={"STIGMER_TOKEN": self.tokens[role]})

    def fails(self, *args: str, role: str = "admin", input: str | None = None) -> str:
        """The last line of a command that exits 1, without its ``stigmer: ``."""
        result = self(*args, role=role, input=input)
        assert result.code == 1, (args, result.code, result.err)
        return result.err.strip().splitlines()[-1].removeprefix("stigmer: ")


@pytest.fixture
def team(stigmer: Stigmer, tmp_path: Path) -> Iterator[Team]:
    app = Application.open(tmp_path / "served", durable=False, require_auth=True)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    try:
        seeded = seed_org(app, ALPHA).objects
        tokens = {role: make_token(app, ALPHA, role, role)[0] for role in ("viewer", "runner", "editor", "admin")}
        server.start()
        yield Team(stigmer, server.address, tokens, seeded)
    finally:
        server.stop(grace=1)
        app.close()


def test_every_command_tells_an_org_the_server_does_not_know_and_where_it_came_from(team: Team) -> None:
    """The token is alpha's, the org the configured default 'local': a list said so, but a get, a
    delete and a cancel said the object was not found (nothing was looked for), and an apply said
    only "org 'local' not found"."""
    hint = f"org 'local' not found on {team.address} (the org comes from the config file or $STIGMER_ORG"
    execution = team.seeded["AgentExecution"].metadata.slug
    for args in (
        ("get", "environments"),
        ("get", "environment", "cli-env"),
        ("delete", "environment", "cli-env"),
        ("cancel", "agentexecution", execution),
    ):
        said = team.fails(*args)
        assert said.startswith(hint) and "`stigmer login`" in said, (args, said)
    exported = team("export", "environment")
    assert exported.code == 1 and f"not exported: kind 'environment': {hint}" in exported.err, exported.err
    # the summary does not count a kind that was not listed as exported (it said "of 1 kind")
    assert "exported 0 objects of 0 of 1 kind from org 'local'" in exported.err, exported.err
    applied = team.fails("apply", "-f", "-", input=ENVIRONMENT)
    assert applied.startswith("<stdin>, document 1 (environment/cli-env): " + hint), applied
    # an org given is not guessed about, and a document's own org did not come from the config
    assert team.fails("get", "environment", "cli-env", "--org", "beta") == "org 'beta' not found"
    named = team.fails("apply", "-f", "-", input=ENVIRONMENT.replace("name: cli-env", "name: cli-env, org: beta"))
    assert named.endswith(": org 'beta' not found"), named


def test_an_id_of_another_orgs_object_names_the_org_that_holds_it(team: Team) -> None:
    """An id names one object whatever the org (ids are unique across orgs): a get or delete by
    id with the configured org 'local' said the object was "not found in org 'local'", though the
    server had just answered it, in alpha."""
    env_id = team.seeded["Environment"].metadata.id
    wanted = f"environment '{env_id}' is in org 'alpha', not in org 'local': give --org alpha"
    assert team.fails("get", "environment", env_id) == wanted
    assert team.fails("delete", "environment", env_id) == wanted
    assert env_id in team("get", "environment", env_id, "--org", ALPHA).out


def test_revoking_a_token_without_admin_access_says_what_it_needs(team: Team) -> None:
    """It named the query a revoke by name makes first: "lacks admin access for
    .../ApiTokenQueryController/getByReference"."""
    for role in ("viewer", "runner", "editor"):
        for ref in ("viewer", team.seeded["ApiToken"].metadata.id):  # by name (read first), by id
            said = team.fails("token", "revoke", ref, "--org", ALPHA, role=role)
            wanted = f"revoking a token needs admin access in org 'alpha': token:alpha/{role} ({role} in alpha) "
            assert said == wanted + "does not have it", said
    assert "token/viewer revoked" in team("token", "revoke", "viewer", "--org", ALPHA).out


def test_a_failed_export_has_no_last_line_and_import_refuses_it(team: Team, tmp_path: Path) -> None:
    """An export of an org the token is not in exited 1 but wrote a whole-looking export of 0
    objects: a backup script ignoring the exit code kept it as complete."""
    failed = team("export", "environment", "--org", "beta")
    assert failed.code == 1
    assert "# end of stigmer export" not in failed.out
    assert failed.out.startswith("# stigmer export: 0 objects")
    assert "# stigmer export failed: not exported: kind 'environment': org 'beta' not found\n" in failed.out
    target = ("--data-dir", str(tmp_path / "restored" / "data"))
    refused = team.stigmer.fails("import", *target, input=failed.out)
    assert refused.startswith("<stdin>: written by an export that failed (not exported: kind 'environment': "), refused
    assert "nothing was imported" in refused
    whole = team("export", "environment", "--org", ALPHA)
    assert whole.code == 0 and whole.out.endswith("# end of stigmer export: 1 objects\n"), whole.err
    assert team.stigmer.ok("import", *target, input=whole.out).startswith("imported 1 of 1 resources")
