"""``stigmer org delete ORG``: every object of an org goes through its kind's delete (live runs
cancelled first, tokens too), then the org's events are forgotten, so an org name given to another
team shows it nothing of the first; other orgs keep everything. On LMDB with no daemon, and on a
team server's database while its daemon serves."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.application import Application
from stigmer_core.org_removal import count

from .conftest import Stigmer

ALL = Path(__file__).resolve().parents[2] / "examples" / "manifests" / "all.yaml"


def _seed(stigmer: Stigmer) -> None:
    for org in ("gone", "kept"):
        stigmer.ok("apply", "-f", str(ALL), "--org", org)



def _holdings(stigmer: Stigmer, org: str, store: str | None = None) -> tuple[dict[str, int], list[int], list[int]]:
    """What ``org`` holds, the revisions of the log filed under it (and the shared ones), and its
    watermark."""
    with Application.open(stigmer.data_dir, store=store) as app:
        with app.store.read() as txn:
            mine = sorted({r for r, _ in txn.events(0, [org])} - {r for r, _ in txn.events(0, [])})
            watermark = txn.compacted_through([org])
        return count(app, org), mine, [watermark]


def test_an_org_is_deleted_with_its_runs_tokens_and_history(stigmer: Stigmer) -> None:
    _seed(stigmer)
    stigmer.ok("token", "create", "--org", "gone", "--role", "viewer", "--name", "watcher")
    held, history, _ = _holdings(stigmer, "gone")
    assert held["AgentExecution"] == 1 and held["ApiToken"] == 1 and history, held
    kept_before = _holdings(stigmer, "kept")[0]

    assert "KIND" in stigmer.ok("org", "delete", "gone", "--dry-run")
    assert _holdings(stigmer, "gone")[0] == held  # a dry run deletes nothing
    # with no terminal to ask on, nothing is deleted without --yes
    assert "give --yes" in stigmer.fails("org", "delete", "gone", input="y\n", code=2)
    assert _holdings(stigmer, "gone")[0] == held
    # the empty org: a list takes it for every org, so it deleted every org's objects
    assert "no org named" in stigmer.fails("org", "delete", "", "--yes", code=2)
    assert _holdings(stigmer, "kept")[0] == kept_before

    out = stigmer.ok("org", "delete", "gone", "--yes")
    assert "Agent: " in out and "ApiToken: 1 deleted" in out and "org 'gone' removed" in out, out
    held, history, (watermark,) = _holdings(stigmer, "gone")
    assert held == {} and history == [] and watermark > 0
    assert _holdings(stigmer, "kept")[0] == kept_before  # another org keeps everything

    # an org with no objects: its history still goes only once asked
    assert "give --yes" in stigmer.fails("org", "delete", "gone", code=2)
    again = stigmer.ok("org", "delete", "gone", "--yes")  # nothing left: said, and no harm
    assert "holds no objects" in again and "0 revisions" in again, again
    assert "is not an org name" in stigmer.fails("org", "delete", "Not An Org!", "--yes", code=2)


def test_a_dry_run_shows_an_org_while_the_local_daemon_holds_the_store(stigmer: Stigmer, daemon: str) -> None:
    """What would be deleted can be seen without stopping the daemon (an LMDB store has readers in
    any number of processes); the delete itself still needs it stopped."""
    _seed(stigmer)
    shown = stigmer.ok("org", "delete", "gone", "--dry-run")
    assert "KIND" in shown and "Agent " in shown and "AgentExecution " in shown, shown
    refused = stigmer.fails("org", "delete", "gone", "--yes")
    assert "holds" in refused and "stop it first" in refused, refused
    assert "Agent " in stigmer.ok("org", "delete", "gone", "--dry-run"), "the refused delete deleted nothing"


def _listed(stigmer: Stigmer) -> dict[str, tuple[int, int]]:
    rows = json.loads(stigmer.ok("org", "list", "-o", "json"))
    return {row["org"]: (row["objects"], row["bytes"]) for row in rows}


def test_the_orgs_of_a_store_are_listed_with_what_each_holds(stigmer: Stigmer, daemon: str) -> None:
    """From the per-org counters, beside the running daemon; an org with no object is not listed."""
    assert _listed(stigmer) == {}
    assert "no org holds objects" in stigmer.ok("org", "list")
    _seed(stigmer)
    stigmer.ok("token", "create", "--org", "gone", "--role", "viewer", "--name", "watcher")
    listed = _listed(stigmer)
    assert set(listed) == {"gone", "kept"}
    gone, kept = listed["gone"], listed["kept"]
    assert gone[0] == kept[0] + 1, listed  # the same manifests, and one token more
    assert gone[1] > kept[1] > 0, listed
    table = stigmer.ok("org", "list")
    assert table.splitlines()[0].split() == ["ORG", "OBJECTS", "BYTES"], table
    assert table.splitlines()[1].split() == ["gone", f"{gone[0]:,}", f"{gone[1]:,}"], table
    assert "STIGMER_MAX_ORG_OBJECTS" in stigmer("org", "list").err
    stigmer.ok("delete", "agentexecution", "first-run", "--org", "kept")
    assert _listed(stigmer)["kept"][0] < kept[0], "a delete is counted at once"


def test_a_team_servers_org_is_deleted_while_its_daemon_serves(
    stigmer: Stigmer, stigmer_postgres_store_url: str
) -> None:
    stigmer.store = stigmer_postgres_store_url
    address = stigmer.start().address
    _seed(stigmer)
    assert set(_listed(stigmer)) == {"gone", "kept"}
    stigmer.ok("org", "delete", "gone", "--yes")
    assert set(_listed(stigmer)) == {"kept"}, "a removed org holds nothing, so is not listed"
    held, history, (watermark,) = _holdings(stigmer, "gone", stigmer_postgres_store_url)
    assert held == {} and history == [] and watermark > 0
    assert _holdings(stigmer, "kept", stigmer_postgres_store_url)[0]["Agent"] == 1
    with grpc.insecure_channel(address) as channel:  # the daemon's watch from the start is told
        watch = watch_pb2_grpc.WatchStub(channel)
        stream = watch.Watch(watch_pb2.WatchRequest(kind="Agent", org="gone", since_revision=0), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            list(stream)
    assert refused.value.code() == grpc.StatusCode.ABORTED, refused.value.details()
    assert "compacted" in (refused.value.details() or "")


def test_a_removed_orgs_token_is_refused_at_once_by_a_daemon_that_took_it_before(
    stigmer: Stigmer, stigmer_postgres_store_url: str
) -> None:
    """A daemon takes a token it checked for its cache's 5 s: the org's holder wrote into it after
    the command said it was removed. The tokens go first, and the command waits that long."""
    stigmer.store = stigmer_postgres_store_url
    stigmer.home.mkdir(parents=True, exist_ok=True)
    (stigmer.home / "config.yaml").write_text("server:\n  require_auth: true\n")
    made = stigmer.ok("token", "create", "--org", "gone", "--role", "editor", "--name", "team")
    token = next(word for word in made.split() if word.startswith("stg_"))
    address = stigmer.start().address
    metadata = (("authorization", f"Bearer {token}"),)
    request = agent_pb2.ListAgentsRequest(org="gone")
    with grpc.insecure_channel(address) as channel:
        agents = service_pb2_grpc.AgentQueryControllerStub(channel)
        agents.list(request, metadata=metadata, timeout=10)  # taken, and cached
        result = stigmer("org", "delete", "gone", "--yes")
        assert result.code == 0 and "waiting 5 s" in result.err, result.err
        with pytest.raises(grpc.RpcError) as refused:
            agents.list(request, metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()


def test_after_a_login_the_org_commands_say_they_work_on_the_local_store(stigmer: Stigmer) -> None:
    """After `stigmer login` to a team server, `org delete acme --dry-run` said the org held no
    objects while the team's held dozens: it works on the local store, and now says so."""
    _seed(stigmer)
    listed = stigmer("org", "list")
    assert listed.code == 0 and "note: `stigmer org list` works on the local store" not in listed.err
    stigmer.ok("backend", "switch", "remote", "--endpoint", "127.0.0.1:1")
    for command in (("org", "list"), ("org", "delete", "acme", "--dry-run")):
        said = stigmer(*command)
        assert said.code == 0, said.err
        assert f"works on the local store in {stigmer.data_dir}" in said.err, said.err
        assert "the remote server 127.0.0.1:1, is not used" in said.err, said.err
