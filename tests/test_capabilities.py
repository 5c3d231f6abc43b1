"""Generic capabilities any kind can declare: indexes and list filters,
listBy queries, references checked in the writing transaction, watch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.protocol import Store
from stigmer_core.testing.inspect import raw_keys
from tests.widget_kind import WidgetPlugin, message

Widget = message("Widget")


@pytest.fixture(params=["in-process", "network"])
def app_channel(
    request: pytest.FixtureRequest, tmp_path: Path, stigmer_store: str | None
) -> Iterator[tuple[Application, grpc.Channel]]:
    pm = plugin_manager(plugins=[WidgetPlugin()])
    store: Store = (
        LmdbStore(tmp_path, durable=False, event_retention=50)
        if stigmer_store is None
        else PostgresStore(stigmer_store, durable=False, event_retention=50)
    )
    app = Application(build_registry(pm), store, pm)
    if request.param == "in-process":
        yield app, app.channel()
    else:
        server = Server(app, "127.0.0.1:0", max_workers=8)
        server.start()
        channel = grpc.insecure_channel(server.address)
        yield app, channel
        channel.close()
        server.stop(grace=0)
    app.close()


def _clients(app: Application, channel: grpc.Channel) -> tuple[KindClient, KindClient]:
    return KindClient(channel, app.registry.kind("Widget")), KindClient(channel, app.registry.kind("Agent"))


def _agent(agents: KindClient, name: str, org: str = "") -> Any:
    agent = agents.kind.resource_cls()
    agent.metadata.name = name
    agent.metadata.org = org
    return agents.create(agent)


def _widget(name: str, owner: str = "", color: int = 0, org: str = "") -> Any:
    w = Widget()
    w.metadata.name = name
    w.metadata.org = org
    w.spec.owner_id = owner
    w.spec.color = color
    return w


def test_references_are_checked_and_block_deletes_while_live(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, agents = _clients(app, channel)
    owner = _agent(agents, "owner")
    with pytest.raises(grpc.RpcError) as err:
        widgets.create(_widget("dangling", owner="agt-01arz3ndektsv4rrffq69g5fav"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "spec.owner_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        widgets.create(_widget("other org", owner=owner.metadata.id, org="acme"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    live = widgets.create(_widget("live", owner=owner.metadata.id))
    with pytest.raises(grpc.RpcError) as err:
        agents.delete(owner.metadata.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "still referenced by widget 'live'" in err.value.details()
    assert agents.get(owner.metadata.id) == owner  # nothing was half-deleted
    widgets.call("setPhase", message("SetPhaseRequest")(value=live.metadata.id, phase="DONE"))
    agents.delete(owner.metadata.id)  # a finished referrer no longer blocks
    assert raw_keys(app.store, b"q/") == []


def test_list_filter_and_list_by_use_indexes(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, agents = _clients(app, channel)
    a, b = _agent(agents, "a"), _agent(agents, "b")
    made = [widgets.create(_widget(f"w{i}", owner=(a, b)[i % 2].metadata.id, color=1 + i % 2)) for i in range(7)]
    by_a: list[Any] = []
    token, pages = "", 0
    ListByOwner = message("ListByOwnerRequest")
    while True:
        page = widgets.call("listByOwner", ListByOwner(owner_id=a.metadata.id, page_size=2, page_token=token))
        by_a.extend(page.entries)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert [w.metadata.id for w in by_a] == [w.metadata.id for w in made if w.spec.owner_id == a.metadata.id]
    assert pages == 2
    red = message("ListWidgetsRequest")(color=1, page_size=3)
    reds: list[Any] = []
    while True:
        page = widgets.call("list", red)
        reds.extend(page.entries)
        if not page.next_page_token:
            break
        red.page_token = page.next_page_token
    assert [w.metadata.id for w in reds] == [w.metadata.id for w in made if w.spec.color == 1]
    with pytest.raises(grpc.RpcError) as err:
        widgets.call("listByOwner", ListByOwner())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_index_entries_follow_updates_and_deletes(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, agents = _clients(app, channel)
    owner = _agent(agents, "owner")
    w = widgets.create(_widget("w", owner=owner.metadata.id, color=1))
    assert len(raw_keys(app.store, b"x/widgets/color/")) == 2  # org-scoped and all-orgs entries
    w.spec.color = 2
    w.spec.owner_id = ""
    widgets.update(w)
    assert [k.split(b"\x00")[1] for k in raw_keys(app.store, b"x/widgets/color/")] == [b"BLUE", b"BLUE"]
    referrers = raw_keys(app.store, f"q/{owner.metadata.id}/".encode())  # the agent's default instance is one
    assert raw_keys(app.store, b"x/widgets/owner/") == [] and not [k for k in referrers if b"/widgets/" in k]
    widgets.delete(w.metadata.id)
    assert raw_keys(app.store, b"x/widgets/") == []


def test_watch_streams_every_state_in_order_and_resumes(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, _ = _clients(app, channel)
    w = widgets.create(_widget("watched"))
    Watch, SetPhase = message("WatchWidgetRequest"), message("SetPhaseRequest")
    phases = [f"step-{i}" for i in range(20)] + ["DONE"]
    seen: list[Any] = []
    stream = widgets.call("watch", Watch(value=w.metadata.id), timeout=30)
    first = next(stream)
    assert first == w

    def writer() -> None:
        for phase in phases:
            widgets.call("setPhase", SetPhase(value=w.metadata.id, phase=phase))

    thread = threading.Thread(target=writer)
    thread.start()
    seen = list(stream)  # ends by itself after DONE
    thread.join(timeout=30)
    assert [s.status.phase for s in seen] == phases
    versions = [s.metadata.resource_version for s in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    # resume after the 5th state: exactly the states written after it
    resumed = list(widgets.call("watch", Watch(value=w.metadata.id, after_revision=versions[4]), timeout=30))
    assert [s.status.phase for s in resumed] == phases[5:]


def test_watch_from_beyond_retention_is_told_to_relist(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, _ = _clients(app, channel)
    w = widgets.create(_widget("busy"))
    SetPhase = message("SetPhaseRequest")
    for i in range(60):  # the store keeps 50 revisions of events
        widgets.call("setPhase", SetPhase(value=w.metadata.id, phase=f"p{i}"))
    with pytest.raises(grpc.RpcError) as err:
        list(
            widgets.call(
                "watch",
                message("WatchWidgetRequest")(value=w.metadata.id, after_revision=w.metadata.resource_version),
                timeout=30,
            )
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "resume from its resource_version" in err.value.details()


def test_update_does_not_recheck_a_reference_it_keeps(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, agents = _clients(app, channel)
    owner = _agent(agents, "owner")
    w = widgets.create(_widget("history", owner=owner.metadata.id))
    widgets.call("setPhase", message("SetPhaseRequest")(value=w.metadata.id, phase="DONE"))
    agents.delete(owner.metadata.id)  # allowed: the widget is finished
    w = widgets.get(w.metadata.id)
    w.metadata.labels["kept"] = "yes"
    w = widgets.update(w)
    assert w.metadata.labels["kept"] == "yes"
    w.spec.owner_id = "agt-01arz3ndektsv4rrffq69g5fav"  # a new id is still checked
    with pytest.raises(grpc.RpcError) as err:
        widgets.update(w)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_resuming_after_the_final_state_ends_at_once(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, _ = _clients(app, channel)
    w = widgets.create(_widget("finished"))
    done = widgets.call("setPhase", message("SetPhaseRequest")(value=w.metadata.id, phase="DONE"))
    watch = message("WatchWidgetRequest")(value=w.metadata.id, after_revision=done.metadata.resource_version)
    assert list(widgets.call("watch", watch, timeout=10)) == []


def test_stream_deadline_is_honoured_on_both_paths(app_channel: tuple[Application, grpc.Channel]) -> None:
    app, channel = app_channel
    widgets, _ = _clients(app, channel)
    w = widgets.create(_widget("quiet"))
    stream = widgets.call("watch", message("WatchWidgetRequest")(value=w.metadata.id), timeout=0.5)
    with pytest.raises(grpc.RpcError) as err:
        list(stream)  # the first state arrives, then nothing until the deadline
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_steps_can_read_a_declared_index_in_id_order(app_channel: tuple[Application, grpc.Channel]) -> None:
    from stigmer_core.kinds.resources import Resources

    app, channel = app_channel
    widgets, agents = _clients(app, channel)
    owner = _agent(agents, "owner")
    made = [widgets.create(_widget(f"w{i}", owner=owner.metadata.id)).metadata.id for i in range(4)]
    kind = app.registry.kind("Widget")
    with app.store.read() as txn:
        view = Resources(txn, app.registry)
        assert list(view.scan_index(kind, "owner", (owner.metadata.id,))) == made
        assert list(view.scan_index(kind, "owner", (owner.metadata.id,), after=made[1])) == made[2:]
