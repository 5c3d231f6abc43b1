"""Versioning is a declaration any kind can turn on: here a kind with no generated code
(tests/widget_kind.py) becomes versioned by adding ``Versioning(...).steps()``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, CustomOperation, KindDeclaration, ResourceExhausted, hookimpl
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.plugins import plugin_manager
from stigmer_core.status import from_rpc_error
from stigmer_core.store import open_store
from stigmer_core.testing.inspect import raw_keys
from stigmer_core.versioning import Versioning, frame, merge_steps, versions_of
from tests.widget_kind import WIDGET, message

Widget = message("Widget")
PARTS = Versioning(
    content=lambda w: frame(*(p.encode() for p in w.spec.parts)),  # type: ignore[attr-defined]
    tag=lambda w: w.metadata.labels.get("release", ""),  # type: ignore[attr-defined]
    tag_field='metadata.labels["release"]',
)
VERSIONED = attrs.evolve(
    WIDGET,
    steps=merge_steps(WIDGET.steps, PARTS.steps()),
    operations={
        **WIDGET.operations,
        "listByOwner": CustomOperation(steps=(standard.authorize, PARTS.list_versions("owner_id"))),
    },
)


class VersionedWidgets:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [VERSIONED]


@pytest.fixture
def widgets(tmp_path: Path, stigmer_store: str | None) -> Iterator[tuple[Application, KindClient]]:
    pm = plugin_manager(plugins=[VersionedWidgets()])
    app = Application(build_registry(pm), open_store(stigmer_store or tmp_path, durable=False), pm)
    yield app, KindClient(app.channel(), app.registry.kind("Widget"))
    app.close()


def _widget(*parts: str, release: str = "") -> Any:
    w = Widget()
    w.metadata.name = "gear"
    w.spec.parts.extend(parts)
    if release:
        w.metadata.labels["release"] = release
    return w


def test_another_kind_declares_versioning_and_gets_every_part_of_it(widgets: tuple[Application, KindClient]) -> None:
    app, client = widgets
    one = client.apply(_widget("cog", release="v1"))
    assert client.apply(_widget("cog", release="v1")) == one  # identical: nothing written
    two = client.apply(_widget("cog", "axle", release="v2"))
    assert two.metadata.version.previous_version_id == one.metadata.version.id
    relabelled = client.apply(_widget("cog", "axle"))  # no tag: metadata changes, no version
    assert relabelled.metadata.version == two.metadata.version
    with app.store.read() as txn:
        assert list(versions_of(txn, app.registry.kind("Widget"), one.metadata.id)) == [
            one.metadata.version.id,
            two.metadata.version.id,
        ]

    def resolve(version: str) -> Any:
        return client.call("getByReference", metadata_pb2.ApiResourceReference(slug="gear", version=version))

    assert list(resolve("v1").spec.parts) == ["cog"]
    assert resolve("v2") == relabelled  # the current content answers as the current object
    assert resolve(one.metadata.version.id) == resolve("v1")
    listed = client.call("listByOwner", message("ListByOwnerRequest")(owner_id=one.metadata.id, page_size=1))
    assert [w.metadata.version.id for w in listed.entries] == [one.metadata.version.id]
    assert listed.next_page_token

    with pytest.raises(grpc.RpcError) as err:
        client.apply(_widget("cog", release="f" * 64))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'metadata.labels["release"]' in (err.value.details() or "")

    client.delete(one.metadata.id)
    assert raw_keys(app.store, b"ver/") == []


def test_a_cascading_delete_clears_an_owned_objects_versions(widgets: tuple[Application, KindClient]) -> None:
    app, client = widgets
    agents = KindClient(app.channel(), app.registry.kind("Agent"))
    owner = agents.kind.resource_cls()
    owner.metadata.name = "owner"  # type: ignore[attr-defined]
    owner = agents.create(owner)
    owned = _widget("cog", release="v1")
    owned.metadata.owner_references.add(kind="Agent", id=owner.metadata.id)  # type: ignore[attr-defined]
    owned = client.create(owned)
    client.apply(_widget("cog", "axle", release="v2"))
    assert raw_keys(app.store, b"ver/widgets/" + owned.metadata.id.encode())
    agents.delete(owner.metadata.id)  # the widget goes with its owner, and so do its versions
    assert raw_keys(app.store, b"ver/") == []
    assert raw_keys(app.store, b"o/widgets/") == []


def test_an_object_keeps_at_most_max_versions_per_object_and_its_delete_clears_the_count(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor pushing small changes in a loop made a skill with unbounded versions, whose
    delete cleared them all in one write, with every org's writes waiting on a team server."""
    monkeypatch.setenv("STIGMER_MAX_VERSIONS_PER_OBJECT", "3")
    pm = plugin_manager(plugins=[VersionedWidgets()])
    app = Application(build_registry(pm), open_store(stigmer_store or tmp_path, durable=False), pm)
    try:
        client = KindClient(app.channel(), app.registry.kind("Widget"))
        made = [client.apply(_widget(*parts)) for parts in (["cog"], ["cog", "axle"], ["axle"])]
        base = b"ver/widgets/" + made[0].metadata.id.encode() + b"/"
        with pytest.raises(grpc.RpcError) as refused:
            client.apply(_widget("spring"))
        error = from_rpc_error(refused.value)
        assert isinstance(error, ResourceExhausted) and error.reason == "VERSION_LIMIT", refused.value.details()
        assert "keeps 3 versions, and 3 is the most" in str(refused.value.details()), refused.value.details()
        assert error.metadata["setting"] == "STIGMER_MAX_VERSIONS_PER_OBJECT", error.metadata
        assert client.get(made[0].metadata.id) == made[2]  # nothing of the refused write is stored
        back = client.apply(_widget("cog"))  # a content it already had: no new version, so it fits
        assert back.metadata.version.id == made[0].metadata.version.id
        with app.store.read() as txn:
            assert txn.get(base + b"c") == (3).to_bytes(8, "big")
        # a store versioned before the count was kept: the n/ range is counted once, by the next version
        app.store.transact(lambda txn: txn.delete(base + b"c"))
        with pytest.raises(grpc.RpcError) as refused:
            client.apply(_widget("spring"))
        assert from_rpc_error(refused.value).reason == "VERSION_LIMIT"  # type: ignore[attr-defined]
        client.delete(made[0].metadata.id)
        assert raw_keys(app.store, b"ver/") == []
        again = client.apply(_widget("spring"))  # a new object of the name starts its own count
        with app.store.read() as txn:
            assert txn.get(b"ver/widgets/" + again.metadata.id.encode() + b"/c") == (1).to_bytes(8, "big")
    finally:
        app.close()
