"""An index entry longer than a store key may be is refused alike on both engines.

LMDB refused it with a message naming neither the index nor a field, and PostgreSQL took it: a
kind's contract passed on one engine and its objects could not be moved to the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.status import from_rpc_error
from stigmer_core.store.keys import MAX_KEY_BYTES
from tests.test_step_faults import _no_owner_reference, _pm
from tests.widget_kind import WIDGET


def _widget(name: str, owner: str) -> Any:
    made = WIDGET.resource()
    made.metadata.name = name
    made.spec.owner_id = owner
    return made


def test_an_index_value_too_long_for_a_key_is_refused_naming_the_index(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    with Application.open(tmp_path, store=stigmer_store, pm=_pm(_no_owner_reference())) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        kept: Any = widgets.create(_widget("short", "o" * 400))
        with pytest.raises(grpc.RpcError) as caught:
            widgets.create(_widget("long", "o" * 600))
        refused = from_rpc_error(caught.value)
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT and refused.reason == "INDEX_VALUE_TOO_LONG"
        assert refused.metadata == {"kind": "Widget", "index": "owner", "limit": str(MAX_KEY_BYTES)}
        assert [v.field for v in refused.violations] == ["(index owner)"]  # type: ignore[attr-defined]
        assert "more than the 511 a store key may" in refused.message, refused.message
        longer = _widget("short", "o" * 600)
        longer.metadata.id = kept.metadata.id
        with pytest.raises(grpc.RpcError) as again:
            widgets.update(longer)
        assert from_rpc_error(again.value).reason == "INDEX_VALUE_TOO_LONG"
        assert [w.metadata.slug for w in widgets.list_all()] == ["short"]  # type: ignore[attr-defined]
        assert widgets.get(kept.metadata.id).spec.owner_id == "o" * 400  # type: ignore[attr-defined]
