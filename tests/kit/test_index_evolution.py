"""Indexes across plugin versions: added, changed and removed indexes are rebuilt at startup;
``reindex.check`` finds and repairs entries that disagree with the objects.

The kind is the McpServer example, whose ``transport`` enum index is here
"added in a later version": objects are stored by a declaration without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from stigmer_core import (
    CustomOperation,
    IndexSpec,
    KindDeclaration,
    Phase,
    RegistryError,
    StartupError,
    Unimplemented,
    step,
)
from stigmer_core.application import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds import reindex
from stigmer_core.pipeline import steps as standard
from stigmer_core.store import keys
from stigmer_core.testing.inspect import raw_keys
from tests.kit.mcp_example import MCP_SERVER, mcpserver_pb2, plugin, plugin_manager_with

pb: Any = mcpserver_pb2


@step(Phase.LOAD)
def _not_yet(ctx: Any) -> None:
    raise Unimplemented("listByTransport comes with the transport index")


V1 = attrs.evolve(
    MCP_SERVER,
    indexes=(),
    list_filters={},
    operations={**MCP_SERVER.operations, "listByTransport": CustomOperation(steps=(standard.authorize, _not_yet))},
)
"""The kind as a first release declared it: no transport index yet, so no query by it."""


def _open(data_dir: Path, declaration: KindDeclaration) -> Application:
    return Application.open(data_dir, pm=plugin_manager_with(declaration), durable=False)


def _store_servers(app: Application) -> dict[str, int]:
    client = KindClient(app.channel(), app.registry.kind("McpServer"))
    created = {}
    for name, transport, extra in (
        ("files", pb.STDIO, {"command": "mcp-files"}),
        ("search", pb.HTTP, {"url": "https://search.acme.dev/mcp"}),
        ("shell", pb.STDIO, {"command": "mcp-shell"}),
    ):
        server = pb.McpServer(spec=pb.McpServerSpec(transport=transport, **extra))
        server.metadata.name = name
        created[client.create(server).metadata.id] = transport
    return created


def _query(app: Application, method: str, request: Any) -> list[str]:
    call = app.channel().unary_unary(
        f"/acme.mcp.v1.McpServerQueryController/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=pb.McpServerList.FromString,
    )
    return [s.metadata.id for s in call(request).entries]


def _by_transport(app: Application, transport: int, org: str = "") -> list[str]:
    return _query(app, "listByTransport", pb.ListMcpServersByTransportRequest(org=org, transport=transport))


def _filtered(app: Application, transport: int) -> list[str]:
    return _query(app, "list", pb.ListMcpServersRequest(org="local", transport=transport))


def test_an_index_added_in_a_later_version_is_filled_at_the_next_start(tmp_path: Path) -> None:
    with _open(tmp_path, V1) as first:
        created = _store_servers(first)
        assert not raw_keys(first.store, keys.index_range("mcp-servers", "transport"))
    with _open(tmp_path, MCP_SERVER) as upgraded:
        assert [(c.kind, c.rebuilt, c.objects) for c in upgraded.index_changes] == [("McpServer", ("transport",), 3)]
        stdio = sorted(i for i, t in created.items() if t == pb.STDIO)
        assert _by_transport(upgraded, pb.STDIO) == stdio
        assert _by_transport(upgraded, pb.HTTP, org="local") == [i for i, t in created.items() if t == pb.HTTP]
        assert _filtered(upgraded, pb.STDIO) == stdio
        assert reindex.check(upgraded.registry, upgraded.store) == []
    with _open(tmp_path, MCP_SERVER) as again:
        assert again.index_changes == [], "a start with an unchanged declaration rebuilds nothing"


def test_a_read_only_open_of_a_store_that_needs_rebuilding_refuses_and_says_how_to_go_on(tmp_path: Path) -> None:
    """Rebuilding writes: a read-only open (a lost key, a read-only mount) can only say so, in words
    true of both (it told a store on a read-only mount, whose key is there, to restore its key)."""
    with _open(tmp_path, V1) as first:
        _store_servers(first)
    with pytest.raises(StartupError, match="which writes") as refused:
        Application.open(tmp_path, pm=plugin_manager_with(MCP_SERVER), durable=False, read_only=True)
    assert "open it once to write (with its secret key, on a writable disk)" in str(refused.value)
    with _open(tmp_path, MCP_SERVER) as upgraded:
        assert [c.rebuilt for c in upgraded.index_changes] == [("transport",)], "the refused open wrote nothing"


def test_a_changed_index_version_is_rebuilt_and_a_removed_index_is_dropped(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER) as first:
        _store_servers(first)
        prefix = keys.index_range("mcp-servers", "transport")
        with first.store.read() as txn:
            entries = [key for key, _ in txn.scan(prefix)]
        first.store.transact(lambda txn: [txn.delete(key) for key in entries])  # entries of an older values()
    bumped = attrs.evolve(MCP_SERVER, indexes=(IndexSpec("transport", plugin.transport_values, version=2),))
    with _open(tmp_path, bumped) as second:
        assert [c.rebuilt for c in second.index_changes] == [("transport",)]
        assert len(raw_keys(second.store, prefix)) == len(entries)
    with _open(tmp_path, V1) as third:
        assert [c.removed for c in third.index_changes] == [("transport",)]
        assert raw_keys(third.store, prefix) == []


def test_a_store_without_records_has_every_index_rebuilt(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER) as first:
        _store_servers(first)
        first.store.transact(lambda txn: txn.delete(keys.index_record_key("mcp-servers")))
    with _open(tmp_path, MCP_SERVER) as second:
        assert [(c.kind, set(c.rebuilt)) for c in second.index_changes] == [
            ("McpServer", {"_label", "transport", reindex.REFERENCES})
        ]


def test_check_finds_and_repairs_missing_and_stale_entries(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER) as app:
        created = _store_servers(app)
        some_id = next(iter(created))
        lost = raw_keys(app.store, keys.index_range("mcp-servers", "transport"))[0]

        def damage(txn: Any) -> None:
            txn.delete(lost)
            txn.put(keys.slug_key("mcp-servers", "local", "ghost"), some_id.encode())

        app.store.transact(damage)
        problems = reindex.check(app.registry, app.store)
        assert {(p.kind, p.index, p.missing, p.stale) for p in problems} == {
            ("McpServer", "_slug", 0, 1),
            ("McpServer", "transport", 1, 0),
        }
        assert reindex.check(app.registry, app.store, repair=True) == problems
        assert reindex.check(app.registry, app.store) == []
        assert lost in raw_keys(app.store, keys.index_range("mcp-servers", "transport"))


@pytest.mark.parametrize("declaration", [V1, MCP_SERVER], ids=["v1", "v2"])
def test_a_new_store_records_its_indexes_without_rebuilding(tmp_path: Path, declaration: KindDeclaration) -> None:
    with _open(tmp_path, declaration) as app:
        assert app.index_changes == []
        with app.store.read() as txn:
            kind = app.registry.kind("McpServer")
            assert reindex.recorded(txn, kind) == reindex.declared(kind)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key_prefix": "mcps"}, "stored under key prefix 'mcp-servers'"),
        ({"id_prefix": "mcs"}, "ids are kept for good"),
    ],
)
def test_moving_a_kind_that_has_objects_is_refused(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with _open(tmp_path, MCP_SERVER) as app:
        _store_servers(app)
    with pytest.raises(RegistryError, match=message):
        _open(tmp_path, attrs.evolve(MCP_SERVER, **change))
    with _open(tmp_path, MCP_SERVER) as again:
        assert len(raw_keys(again.store, keys.object_prefix("mcp-servers"))) == 3


def test_moving_a_kind_with_no_objects_is_recorded(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER):
        pass
    moved = attrs.evolve(MCP_SERVER, key_prefix="mcps", id_prefix="mcs")
    with _open(tmp_path, moved) as app:
        _store_servers(app)
    with pytest.raises(RegistryError):
        _open(tmp_path, MCP_SERVER)


def test_a_key_prefix_holding_another_kinds_objects_is_refused(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER) as app:
        _store_servers(app)
    squatter = attrs.evolve(MCP_SERVER, name="ToolServer", plural="toolservers", aliases=())
    with pytest.raises(RegistryError, match="holds objects of kind 'McpServer'"):
        _open(tmp_path, squatter)


def test_check_covers_reference_entries(tmp_path: Path) -> None:
    with _open(tmp_path, MCP_SERVER) as app:
        environments = KindClient(app.channel(), app.registry.kind("Environment"))
        env: Any = environments.create(_named(app.registry.kind("Environment").resource_cls(), "prod"))
        servers = KindClient(app.channel(), app.registry.kind("McpServer"))
        server = pb.McpServer(spec=pb.McpServerSpec(transport=pb.STDIO, command="run", environment_id=env.metadata.id))
        servers.create(_named(server, "files"))
        entries = raw_keys(app.store, keys.referrer_prefix(env.metadata.id))
        assert len(entries) == 1
        app.store.transact(lambda txn: txn.delete(entries[0]))
        assert [(p.index, p.missing) for p in reindex.check(app.registry, app.store)] == [(reindex.REFERENCES, 1)]
        reindex.check(app.registry, app.store, repair=True)
        assert raw_keys(app.store, keys.referrer_prefix(env.metadata.id)) == entries
        assert reindex.check(app.registry, app.store) == []


def _named(resource: Any, name: str) -> Any:
    resource.metadata.name = name
    return resource


def test_a_reference_a_later_release_declares_gets_its_entries_at_the_next_start(tmp_path: Path) -> None:
    """AgentInstance.spec.agent_id became a declared reference: instances stored before had no
    reverse-reference entries, and doctor reported them missing until a repair."""
    import json

    from stigmer_core.api.agentic.agent.v1 import agent_pb2

    with Application.open(tmp_path, durable=False) as first:
        agents = KindClient(first.channel(), first.registry.kind("Agent"))
        for name in ("one", "two"):
            agents.create(agent_pb2.Agent(metadata={"name": name}))
        kind = first.registry.kind("AgentInstance")
        entries = [k for k, _ in reindex.reference_entries(first.store, kind)]
        assert len(entries) == 2

        def as_an_older_release_left_it(txn: Any) -> None:
            for key in entries:
                txn.delete(key)
            record = json.loads(txn.get(keys.index_record_key(kind.key_prefix)))
            del record["indexes"][reindex.REFERENCES]
            txn.put(keys.index_record_key(kind.key_prefix), json.dumps(record).encode())

        first.store.transact(as_an_older_release_left_it)
        assert {(p.kind, p.index, p.missing) for p in reindex.check(first.registry, first.store)} == {
            ("AgentInstance", reindex.REFERENCES, 2)
        }
    with Application.open(tmp_path, durable=False) as upgraded:
        assert [(c.kind, c.rebuilt, c.objects) for c in upgraded.index_changes] == [
            ("AgentInstance", (reindex.REFERENCES,), 2)
        ]
        assert reindex.check(upgraded.registry, upgraded.store) == []
    with Application.open(tmp_path, durable=False) as again:
        assert again.index_changes == []


def _by_command(server: Any) -> list[tuple[str, ...]]:
    return [(server.spec.command,)] if server.spec.command else []


def test_an_index_added_over_a_stored_value_too_long_for_it_stops_the_start_naming_the_object(
    tmp_path: Path,
) -> None:
    """On LMDB the rebuild failed at its commit with "a value of this write is too long to be
    indexed", naming no kind, index or object, and every command stopped the same way."""
    with _open(tmp_path, V1) as first:
        client = KindClient(first.channel(), first.registry.kind("McpServer"))
        server = pb.McpServer(spec=pb.McpServerSpec(transport=pb.STDIO, command="x" * 600))
        server.metadata.name = "long"
        made = client.create(server).metadata.id
    by_command = attrs.evolve(V1, indexes=(IndexSpec("command", _by_command),))
    with pytest.raises(StartupError) as refused:
        _open(tmp_path, by_command)
    said = str(refused.value)
    assert "its index 'command' cannot be built over the stored" in said and made in said and "'long'" in said, said
    assert "too long to be indexed" in said and "nothing was changed" in said, said
    with _open(tmp_path, V1) as again:  # nothing was changed: the release before still serves it
        assert [s.metadata.id for s in KindClient(again.channel(), again.registry.kind("McpServer")).list_all()] == [
            made
        ]
