"""No custom rpc sends a kind's secret in clear, whichever step built its answer: one of the
RESPOND phase (after ``redact``), or a plugin's own generator answering a server stream.

Driven through a real daemon (LMDB, gRPC on 127.0.0.1) on the asyncio server a local daemon runs
and the sync server PostgreSQL runs, and through the in-process channel, as a plain caller.
"""

from __future__ import annotations

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
from stigmer_core.store.lmdb_store import LmdbStore
from tests.gizmo_feed_kind import FEED_GIZMO, FeedPlugin
from tests.gizmo_kind import message
from tests.plugin_server_support import serving

GIZMO_ID = message("GizmoId")
SECRET = "sk-live-123"


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
def feed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Feed]:
    pm = plugin_manager(entry_points=False, plugins=[FeedPlugin()])
    app = Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm)
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


def test_a_step_of_the_respond_phase_answers_the_object_blanked(feed: Feed) -> None:
    gizmos = feed.gizmos
    made = _made(gizmos)
    answered: Any = gizmos.call("peek", GIZMO_ID(value=made))
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
    """Decided when the pipelines are built: a standard rpc, and a custom one whose own steps
    blank what it sends, run no extra step per request."""
    registry = build_registry(plugin_manager(entry_points=False, plugins=[FeedPlugin()]))
    pipelines = registry.kind(FEED_GIZMO.name).pipelines
    last = {op: [s.name for s in (*p.pre, *p.txn)][-1] for op, p in pipelines.items()}
    assert {op for op, name in last.items() if name == "blank_sent"} == {"peek", "follow", "pages"}
