"""No rpc sends a kind's secret in clear, whichever step built its answer: one of the RESPOND
phase (after ``redact``, on a custom rpc or a standard one), a plugin's own generator or
subscription object answering a server stream, or a message of its own holding objects deep.

Driven through a real daemon (LMDB, then PostgreSQL; gRPC on 127.0.0.1) on the asyncio server a local daemon runs
and the sync server PostgreSQL runs, and through the in-process channel, as a plain caller.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from stigmer_core import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store import open_store
from tests.gizmo_feed_kind import FEED_GIZMO, FeedPlugin, Subscription
from tests.gizmo_kind import message
from tests.plugin_server_support import serving

GIZMO_ID = message("GizmoId")
SECRET = "sk-live-123"
WAIT = 30.0
"""How long a test waits for what must happen; never a measure of speed."""


@attrs.frozen
class Feed:
    app: Application
    gizmos: KindClient

    def stored_note(self, object_id: str) -> str:
        kind = self.app.registry.kind(FEED_GIZMO.name)
        with self.app.store.read() as txn:
            raw = txn.get(kind.object_key(object_id))
        assert raw is not None
        return str(kind.parse(raw).spec.note)  # type: ignore[attr-defined]


@pytest.fixture(params=["asyncio", "sync", "in-process"])
def feed(request: pytest.FixtureRequest, tmp_path: Path, stigmer_store: str | None) -> Iterator[Feed]:
    pm = plugin_manager(entry_points=False, plugins=[FeedPlugin()])
    app = Application(build_registry(pm), open_store(stigmer_store or tmp_path, durable=False), pm)
    kind = app.registry.kind(FEED_GIZMO.name)
    try:
        if request.param == "in-process":
            yield Feed(app, KindClient(app.channel(), kind))
        else:
            with serving(app, PoolSizes(read_threads=0 if request.param == "asyncio" else 2)) as (_, channel):
                yield Feed(app, KindClient(channel, kind))
    finally:
        app.close()


def _made(gizmos: KindClient) -> str:
    gizmo: Any = FEED_GIZMO.resource()
    gizmo.metadata.name = "g"
    gizmo.spec.note = SECRET
    made: Any = gizmos.create(gizmo)
    assert made.spec.note == "<redacted>"
    return str(made.metadata.id)


@pytest.mark.parametrize("rpc", ["peek", "get"])  # a custom rpc, and a standard one a kind's step answers
def test_a_step_of_the_respond_phase_answers_the_object_blanked(feed: Feed, rpc: str) -> None:
    gizmos = feed.gizmos
    made = _made(gizmos)
    answered: Any = gizmos.call(rpc, GIZMO_ID(value=made))
    assert (answered.metadata.id, answered.spec.note) == (made, "<redacted>")


def test_a_plugins_own_stream_of_objects_is_blanked_as_it_is_sent(feed: Feed) -> None:
    gizmos = feed.gizmos
    made = _made(gizmos)
    sent: list[Any] = list(gizmos.call("follow", GIZMO_ID(value=made)))
    assert [(s.metadata.id, s.spec.note) for s in sent] == [(made, "<redacted>"), (made, "<redacted>"), (made, "")]
    assert feed.stored_note(made) == SECRET  # what was sent was a copy


def test_a_stream_of_pages_holding_objects_is_blanked_as_it_is_sent(feed: Feed) -> None:
    gizmos = feed.gizmos
    made = _made(gizmos)
    pages: list[Any] = list(gizmos.call("pages", GIZMO_ID(value=made)))
    assert [[e.spec.note for e in page.entries] for page in pages] == [["<redacted>", "<redacted>"], ["<redacted>"]]
    assert {e.metadata.id for page in pages for e in page.entries} == {made}


def test_only_custom_rpcs_not_blanking_all_they_send_get_the_last_step() -> None:
    """Decided when the pipelines are built: a standard rpc whose kind adds no RESPOND step, and a
    custom one whose own steps blank what it sends, run no extra step per request."""
    registry = build_registry(plugin_manager(entry_points=False, plugins=[FeedPlugin()]))
    pipelines = registry.kind(FEED_GIZMO.name).pipelines
    last = {op: [s.name for s in (*p.pre, *p.txn)][-1] for op, p in pipelines.items()}
    assert {op for op, name in last.items() if name == "blank_sent"} == {"peek", "follow", "pages", "subscription", "get"}


def test_objects_held_deep_in_a_message_of_its_own_are_blanked(feed: Feed) -> None:
    gizmos = feed.gizmos
    made = _made(gizmos)
    shelf: Any = gizmos.call("shelf", GIZMO_ID(value=made))
    unpacked: Any = FEED_GIZMO.resource()
    assert shelf.packed.Unpack(unpacked)
    assert [shelf.by_name["g"].spec.note, shelf.hits[0].gizmo.spec.note, unpacked.spec.note] == ["<redacted>"] * 3
    assert (unpacked.metadata.id, shelf.hits[0].score) == (made, 1.0)
    assert feed.stored_note(made) == SECRET


def test_a_cancelled_stream_of_a_subscription_object_lets_go_at_once(feed: Feed) -> None:
    """An answer whose ``__iter__`` is a generator, with no ``close`` of its own, is closed through
    that generator when its call is cancelled, not whenever a garbage collection finds it."""
    gizmos = feed.gizmos
    made = _made(gizmos)
    gc.disable()  # what is left to a collection stays left
    try:
        stream = gizmos.call("subscription", GIZMO_ID(value=made), timeout=WAIT)
        assert next(stream).spec.note == "<redacted>"
        assert Subscription.ended[made] is False
        stream.cancel()
        waited_until = time.monotonic() + WAIT
        while not Subscription.ended[made] and time.monotonic() < waited_until:
            time.sleep(0.01)
        assert Subscription.ended[made] is True
    finally:
        gc.enable()
