"""Two releases of one kind plugin over one store (a rolling upgrade of a team server).

Release 1.0 of the McpServer plugin declares no ``transport`` index and no
``args`` field; release 2.0 adds both. Each release is a distribution of its
own (a ``*.dist-info`` on ``sys.path``, found by ``importlib.metadata`` as an
installed package is), so the store records its name and version. Each test
runs on LMDB and on the PostgreSQL fixture; two daemons of one LMDB store
are two applications over one store object (a data directory admits one
daemon), two of PostgreSQL each open the schema themselves.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pluggy
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stigmer_core import KindDeclaration, KindDowngrade, ReadableOnly, StartupError, errors, hookimpl
from stigmer_core.application import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds import reindex, releases
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import ENTRY_POINT_GROUP, plugin_manager
from stigmer_core.store import keys
from stigmer_core.store.engines import open_store
from stigmer_core.store.protocol import Store
from stigmer_core.testing.inspect import raw_keys
from tests.kit.mcp_example import MCP_SERVER, mcpserver_pb2
from tests.kit.test_index_evolution import V1 as V1_INDEXES

pb: Any = mcpserver_pb2
TRANSPORT = keys.index_range("mcp-servers", "transport")


def _without_args() -> tuple[Any, Any, Any]:
    """McpServer's resource and services as release 1.0's protos had them: no ``spec.args``.

    One process cannot hold two messages of one name, so these live in package ``acme.mcp.v1old``:
    the same wire format, under other names (release 1.0's daemon is reached by its own paths).
    """
    old, new = f".{pb.DESCRIPTOR.package}.", f".{pb.DESCRIPTOR.package}old."
    service_file = MCP_SERVER.command_service.file
    renamed = {f.name: f"old/{f.name}" for f in (pb.DESCRIPTOR, service_file)}

    def messages(protos: Any) -> Iterator[Any]:
        for message in protos:
            yield message
            yield from messages(message.nested_type)

    pool = descriptor_pool.Default()
    for file in (pb.DESCRIPTOR, service_file):
        proto = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
        proto.name = renamed[file.name]
        proto.package += "old"
        proto.dependency[:] = [renamed.get(dep, dep) for dep in proto.dependency]
        for message in messages(proto.message_type):
            if message.name == "McpServerSpec":
                message.field.remove(next(f for f in message.field if f.name == "args"))
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name[len(old) :]
        for service in proto.service:
            for method in service.method:
                method.input_type = method.input_type.replace(old, new)
                method.output_type = method.output_type.replace(old, new)
        pool.Add(proto)
    resource = message_factory.GetMessageClass(pool.FindMessageTypeByName(new[1:] + "McpServer"))
    services = pool.FindFileByName(renamed[service_file.name]).services_by_name
    return resource, services[MCP_SERVER.command_service.name], services[MCP_SERVER.query_service.name]


_RESOURCE_V1, _COMMANDS_V1, _QUERIES_V1 = _without_args()
V1 = attrs.evolve(V1_INDEXES, resource=_RESOURCE_V1, command_service=_COMMANDS_V1, query_service=_QUERIES_V1, steps={})
V2 = MCP_SERVER


class Kinds:
    def __init__(self, declaration: KindDeclaration) -> None:
        self.declaration = declaration

    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [self.declaration]


PLUGIN_V1 = Kinds(V1)
PLUGIN_V2 = Kinds(V2)
UNSHIPPED_V1 = Kinds(V1)
UNSHIPPED_V2 = Kinds(V2)


@contextlib.contextmanager
def _installed(tmp_path: Path, version: str, target: str) -> Iterator[None]:
    """A distribution ``acme-mcp`` of ``version`` whose entry point names ``target``, installed
    while the block runs."""
    site = tmp_path / f"site-{version}"
    info = site / f"acme_mcp-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: acme-mcp\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmcp = {__name__}:{target}\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()


def _manager(kinds: Kinds) -> pluggy.PluginManager:
    first_party = [
        ep.load()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("stigmer_plugins")
    ]
    return plugin_manager(entry_points=False, plugins=[*first_party, kinds])


@attrs.define
class Site:
    """One store, and the daemons of either release serving it."""

    tmp_path: Path
    url: str | None
    shared: Store | None = None
    apps: list[Application] = attrs.field(factory=list)

    def store(self) -> Store:
        if self.url is not None:
            return open_store(self.url, durable=False)
        if self.shared is None:
            self.shared = open_store(self.tmp_path / "data", durable=False)
        return self.shared

    def daemon(
        self, version: str, declares: str = "", *, read_only: bool = False, command: bool = False
    ) -> Application:
        """A daemon serving McpServer from release ``version`` (``1.0`` or ``2.0``; ``unshipped-1``
        and ``unshipped-2``: the same declarations registered by hand, from no distribution).
        ``declares``: ``V1`` or ``V2``, the declaration that release's build ships, when it is not
        the one its version stands for (two builds of one version). ``command``: a CLI command's
        application (``transient``), not a daemon's."""
        if version.startswith("unshipped"):
            pm = _manager(UNSHIPPED_V1 if version.endswith("1") else UNSHIPPED_V2)
            registry = build_registry(pm)
        else:
            v1 = declares == "V1" or (not declares and version == "1.0")
            with _installed(self.tmp_path, version, "PLUGIN_V1" if v1 else "PLUGIN_V2"):
                pm = _manager(PLUGIN_V1 if v1 else PLUGIN_V2)
                registry = build_registry(pm)
        store = self.store()
        try:
            app = Application(
                registry,
                store,
                pm,
                data_dir=self.tmp_path / f"home-{len(self.apps)}",
                read_only=read_only,
                transient=command,
            )
        except BaseException:
            if self.url is not None:
                store.close()
            raise
        self.apps.append(app)
        return app

    def stop(self, app: Application) -> None:
        self.apps.remove(app)
        app.events.close()
        if self.url is not None:
            app.store.close()

    def close(self) -> None:
        for app in list(self.apps):
            self.stop(app)
        if self.shared is not None:
            self.shared.close()


@pytest.fixture
def site(tmp_path: Path, stigmer_store: str | None) -> Iterator[Site]:
    found = Site(tmp_path, stigmer_store)
    yield found
    found.close()


def _servers(app: Application) -> KindClient:
    return KindClient(app.channel(), app.registry.kind("McpServer"))


def _create(app: Application, name: str, **spec: Any) -> Any:
    kind = app.registry.kind("McpServer")
    server = kind.resource_cls()
    server.metadata.name = name
    server.spec.transport = pb.STDIO
    server.spec.command = f"mcp-{name}"
    for field, value in spec.items():
        getattr(server.spec, field).extend(value)
    return _servers(app).create(server)


def _by_transport(app: Application) -> list[str]:
    call = app.channel().unary_unary(
        "/acme.mcp.v1.McpServerQueryController/listByTransport",
        request_serializer=pb.ListMcpServersByTransportRequest.SerializeToString,
        response_deserializer=pb.McpServerList.FromString,
    )
    return [s.metadata.id for s in call(pb.ListMcpServersByTransportRequest(transport=pb.STDIO)).entries]


def _record(app: Application) -> dict[str, Any]:
    with app.store.read() as txn:
        raw = txn.get(keys.kind_record_key("McpServer"))
    assert raw is not None
    found: dict[str, Any] = json.loads(raw)
    return found


def test_the_store_records_the_release_that_reconciled_each_kind(site: Site) -> None:
    first = site.daemon("1.0")
    assert _record(first) == {
        "key_prefix": "mcp-servers",
        "id_prefix": "mcp",
        "release": {"distribution": "acme-mcp", "version": "1.0"},
        "declaration": releases.fingerprint(V1),
    }
    with first.store.read() as txn:
        agent = json.loads(txn.get(keys.kind_record_key("Agent")) or b"{}")
    assert agent["release"]["distribution"] == "stigmer-core"
    site.stop(first)
    second = site.daemon("2.0")
    assert _record(second)["release"] == {"distribution": "acme-mcp", "version": "2.0"}
    site.stop(second)
    unshipped = site.daemon("unshipped-2")
    record = _record(unshipped)
    assert "release" not in record
    assert record["declaration"] == releases.fingerprint(V2)


def test_an_older_release_is_refused_at_startup_and_leaves_the_newer_ones_index(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = site.daemon("1.0")
    made = [_create(old, name).metadata.id for name in ("files", "shell")]
    new = site.daemon("2.0")
    assert [(c.rebuilt, c.objects) for c in new.index_changes] == [(("transport",), 2)]
    entries = raw_keys(new.store, TRANSPORT)
    assert entries
    site.stop(old)
    with pytest.raises(StartupError) as refused:  # the old daemon restarts, say its pod moved
        site.daemon("1.0")
    said = str(refused.value)
    assert "'McpServer'" in said and "acme-mcp 1.0" in said and "acme-mcp 2.0" in said
    assert f"{releases.DOWNGRADE_ENV}=McpServer" in said and "Upgrade this daemon" in said
    assert raw_keys(new.store, TRANSPORT) == entries
    assert sorted(_by_transport(new)) == sorted(made)
    site.stop(new)

    assert isinstance(refused.value, KindDowngrade) and isinstance(refused.value, ReadableOnly)
    assert refused.value.problem == (
        "kind 'McpServer' is served here by acme-mcp 1.0, older than acme-mcp 2.0, which last reconciled this store"
    )

    monkeypatch.setenv(releases.DOWNGRADE_ENV, "mcpserver")  # a deliberate downgrade reconciles as any start
    downgraded = site.daemon("1.0")
    assert [c.removed for c in downgraded.index_changes] == [("transport",)]
    assert _record(downgraded)["release"]["version"] == "1.0"


def test_an_older_release_refused_at_startup_may_still_read_the_store(site: Site) -> None:
    """What the CLI's reading commands do with a store a newer release reconciled (``get``, ``list``
    and ``export`` with no daemon): open it read-only, which drops nothing, and read it; its
    writes are refused, and nothing of the newer release's is changed."""
    old = site.daemon("1.0")
    made = _create(old, "files").metadata.id
    site.stop(old)
    new = site.daemon("2.0")
    _create(new, "shell", args=["--verbose"])
    entries, record = raw_keys(new.store, TRANSPORT), _record(new)
    site.stop(new)
    with pytest.raises(KindDowngrade):
        site.daemon("1.0")
    reader = site.daemon("1.0", read_only=True)
    found = {server.metadata.name: server for server in _servers(reader).list_all()}
    assert sorted(found) == ["files", "shell"] and found["files"].metadata.id == made
    with pytest.raises(grpc.RpcError) as refused:
        _create(reader, "written")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    site.stop(reader)
    again = site.daemon("2.0")  # the newer release finds its store as it left it
    assert raw_keys(again.store, TRANSPORT) == entries and _record(again) == record
    assert [s.spec.args for s in _servers(again).list_all() if s.metadata.name == "shell"] == [["--verbose"]]


def test_a_command_with_another_release_never_reconciles_a_store_daemons_share(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A developer's `stigmer get` against the team's database, with a newer release of a kind's
    plugin installed, recorded its release over the daemons' (as a daemon's start does): every
    running daemon then refused writes of the kind, and an older one could not restart. A command
    now reads the store as the daemons serve it, read-only, and changes nothing."""
    site = Site(tmp_path, stigmer_postgres_store_url)
    try:
        daemon = site.daemon("1.0")
        made = _create(daemon, "files").metadata.id
        record, entries = _record(daemon), raw_keys(daemon.store, TRANSPORT)
        with pytest.raises(errors.KindServedOtherwise) as refused:
            site.daemon("2.0", command=True)
        said = str(refused.value)
        assert "kind 'McpServer' is served here by release acme-mcp 2.0" in said, said
        assert "by the store's daemons by release acme-mcp 1.0" in said and "--backend remote" in said, said
        with pytest.raises(StartupError, match="indexes the store's daemons do not keep"):
            site.daemon("2.0", command=True, read_only=True)  # 2.0 reads by an index 1.0 does not keep
        reader = site.daemon("1.0", command=True, read_only=True)  # a reading command of the daemons' release
        assert [s.metadata.id for s in _servers(reader).list_all()] == [made]
        site.stop(reader)
        writer = site.daemon("1.0", command=True)  # and a writing one: the same release, so it writes
        _create(writer, "by-command")
        site.stop(writer)
        assert _record(daemon) == record and raw_keys(daemon.store, TRANSPORT) == entries
        _create(daemon, "after")  # the daemon still writes
        assert len(list(_servers(daemon).list_all())) == 3
    finally:
        site.close()


def test_a_command_is_the_first_to_reconcile_a_new_shared_store(
    tmp_path: Path, stigmer_postgres_store_url: str
) -> None:
    """A store no release has reconciled yet (a new team database, `stigmer apply` before any
    daemon started) is reconciled by the command, as the first to open it."""
    site = Site(tmp_path, stigmer_postgres_store_url)
    try:
        command = site.daemon("2.0", command=True)
        _create(command, "first", args=["--verbose"])
        assert _record(command)["release"] == {"distribution": "acme-mcp", "version": "2.0"}
    finally:
        site.close()


def test_a_write_through_an_older_daemon_after_an_upgrade_is_refused(site: Site) -> None:
    old = site.daemon("1.0")
    before = _create(old, "before")
    new = site.daemon("2.0")  # the rolling upgrade: the old daemon still serves
    kept = _create(new, "kept", args=["--verbose"])

    servers = _servers(old)
    for attempt in (
        lambda: _create(old, "after"),
        lambda: servers.update(_relabelled(servers.get(kept.metadata.id))),
        lambda: servers.delete(before.metadata.id),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            attempt()
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        said = refused.value.details() or ""
        assert "'McpServer'" in said and "release acme-mcp 2.0" in said and "restart this daemon" in said

    stored = _servers(new).get(kept.metadata.id)
    assert list(stored.spec.args) == ["--verbose"], "the field release 2.0 added is kept"
    assert not stored.metadata.labels
    assert reindex.check(new.registry, new.store) == [], "no object lacks its transport entry"
    assert sorted(_by_transport(new)) == sorted([before.metadata.id, kept.metadata.id])
    _servers(new).update(_relabelled(stored))  # the new release writes as before


def test_daemons_of_one_release_write_side_by_side(site: Site) -> None:
    one, two = site.daemon("2.0"), site.daemon("2.0")
    assert two.index_changes == []
    _create(one, "one")
    _create(two, "two")
    _create(one, "three")
    assert len(_by_transport(two)) == 3


def test_a_kind_no_distribution_ships_is_checked_by_its_declaration(site: Site) -> None:
    old = site.daemon("unshipped-1")
    new = site.daemon("unshipped-2")  # no order is known: not refused at startup...
    with pytest.raises(grpc.RpcError) as refused:  # ...but the other declaration's writes are
        _create(old, "after")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"fingerprint {releases.fingerprint(V2)}" in (refused.value.details() or "")
    _create(new, "fine")


def test_two_builds_of_one_version_are_told_apart_by_their_declarations(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A build that adds a field and an index without a new version (every build of stigmer-core
    names one version) must not have its objects' new fields dropped by the other build's writes."""
    old = site.daemon("1.0")
    before = _create(old, "before")
    with caplog.at_level("WARNING", logger="stigmer_core.kinds.reindex"):
        new = site.daemon("1.0", declares="V2")  # the same version: no order, not refused...
    assert [(c.rebuilt, c.objects) for c in new.index_changes] == [(("transport",), 1)]
    warned = [r.getMessage() for r in caplog.records if "another build of this release" in r.getMessage()]
    assert len(warned) == 1 and "McpServer" in warned[0] and releases.fingerprint(V1) in warned[0]
    kept = _create(new, "kept", args=["--verbose"])

    servers = _servers(old)
    for attempt in (  # ...but the other build's writes are refused
        lambda: _create(old, "after"),
        lambda: servers.update(_relabelled(servers.get(kept.metadata.id))),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            attempt()
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        said = refused.value.details() or ""
        assert f"release acme-mcp 1.0 (declaration fingerprint {releases.fingerprint(V2)})" in said
        assert f"started with release acme-mcp 1.0 (declaration fingerprint {releases.fingerprint(V1)})" in said
        assert "both builds name one version" in said

    stored = _servers(new).get(kept.metadata.id)
    assert list(stored.spec.args) == ["--verbose"], "the field the other build lacks is kept"
    assert not stored.metadata.labels
    assert sorted(_by_transport(new)) == sorted([before.metadata.id, kept.metadata.id])
    assert _record(new)["declaration"] == releases.fingerprint(V2)


def test_a_record_from_before_declarations_were_recorded_is_brought_up_to_date_quietly(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.stop(site.daemon("1.0"))
    store = site.store()
    before = {
        "key_prefix": "mcp-servers",
        "id_prefix": "mcp",
        "release": {"distribution": "acme-mcp", "version": "1.0"},
    }
    store.transact(lambda txn: txn.put(keys.kind_record_key("McpServer"), json.dumps(before, sort_keys=True).encode()))
    if site.url is not None:
        store.close()
    with caplog.at_level("WARNING", logger="stigmer_core.kinds.reindex"):
        again = site.daemon("1.0")
    assert not [r for r in caplog.records if "another build" in r.getMessage()], "nothing is known of that build"
    assert _record(again) == {**before, "declaration": releases.fingerprint(V1)}
    _create(again, "after")


def _relabelled(server: Any) -> Any:
    server.metadata.labels["team"] = "tools"
    return server


def test_a_release_is_compared_by_version() -> None:
    older, newer = releases.Release("Acme_MCP", "1.9"), releases.Release("acme-mcp", "1.10")
    assert older.older_than(newer) and not newer.older_than(older)
    assert not older.older_than(releases.Release("other", "2.0")), "another distribution: no order"
    assert not older.older_than(releases.Release("acme-mcp", "not a version"))
    assert releases.downgrades_allowed({releases.DOWNGRADE_ENV: " McpServer, Agent ,"}) == {"mcpserver", "agent"}


def _resource_importing(note_field: bool) -> Any:
    """A message ``Res`` whose ``meta`` field is a message of another file, ``dep.proto``, which
    has a ``note`` field or not: what a change to a shared proto (the standard metadata) is."""
    pool = descriptor_pool.DescriptorPool()
    dep = descriptor_pb2.FileDescriptorProto(name="fp/dep.proto", package="fp")
    meta = dep.message_type.add(name="Meta")
    meta.field.add(name="name", number=1, type=9, label=1)
    if note_field:
        meta.field.add(name="note", number=2, type=9, label=1)
    pool.Add(dep)
    res = descriptor_pb2.FileDescriptorProto(name="fp/res.proto", package="fp", dependency=["fp/dep.proto"])
    res.message_type.add(name="Res").field.add(name="meta", number=1, type=11, label=1, type_name=".fp.Meta")
    pool.Add(res)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fp.Res"))


def test_a_fingerprint_covers_the_proto_files_the_resource_imports_but_not_protobufs_own() -> None:
    without, with_note = (attrs.evolve(V2, resource=_resource_importing(note)) for note in (False, True))
    assert releases.fingerprint(without) != releases.fingerprint(with_note)
    assert releases.fingerprint(without) == releases.fingerprint(attrs.evolve(V2, resource=_resource_importing(False)))
    agent = importlib.import_module("stigmer_core.api.agentic.agent.v1.agent_pb2")
    names = [file.name for file in releases._proto_files(agent.DESCRIPTOR)]
    assert "stigmer_core/api/commons/apiresource/v1/metadata.proto" in names
    assert not [name for name in names if name.startswith(("google/protobuf/", "buf/validate/"))]
    runtime = [
        dep for dep in agent.DESCRIPTOR.dependencies if dep.name.startswith(("google/protobuf/", "buf/validate/"))
    ]
    assert runtime, "the agent's proto imports runtime files, left out above"
