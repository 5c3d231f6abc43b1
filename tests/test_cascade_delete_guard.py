"""A cascade does not take an object its kind's ``delete_guard`` holds: an environment another
agent still names stays when its owner (an agent, an API token) is deleted, refused as its own
delete is, with nothing deleted; and a third-party kind's guard holds its objects the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, FailedPrecondition, KindDeclaration, from_rpc_error, hookimpl
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.declaration import IndexSpec
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from stigmer_core.testing.inspect import raw_keys
from tests.agent_execution_support import Kinds
from tests.auth_support import make_token
from tests.hardening_support import agent, fails
from tests.widget_kind import WIDGET, message

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _owned_environment(kinds: Kinds, name: str, owner_kind: str, owner_id: str) -> Any:
    env = environment_pb2.Environment()
    env.metadata.name = name
    env.spec.data["TOKEN"].value = "s3cret"
    env.spec.data["TOKEN"].is_secret = True
    env.metadata.owner_references.add(kind=owner_kind, id=owner_id)
    return kinds.environments.create(env)


def _refusal(error: grpc.RpcError) -> tuple[str, str, dict[str, str]]:
    found = from_rpc_error(error)
    return found.message, found.reason, found.metadata


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def test_an_owners_delete_is_refused_while_another_agent_names_the_environment(
    stigmer_app: Application, kinds: Kinds
) -> None:
    owner = kinds.agents.create(agent("env owner"))
    shared = _owned_environment(kinds, "shared env", "Agent", owner.metadata.id)
    user = kinds.agent("user agent", env_slugs=["shared-env"])
    before = raw_keys(stigmer_app.store)

    cascade = _refusal(fails(PRECONDITION, lambda: kinds.agents.delete(owner.metadata.id)))
    direct = _refusal(fails(PRECONDITION, lambda: kinds.environments.delete(shared.metadata.id)))
    held = {"kind": "Environment", "id": shared.metadata.id, "referrerKind": "Agent", "field": "spec.environment_refs"}
    assert direct == (
        "environment 'shared-env' is still referenced by agent 'user-agent' (spec.environment_refs); "
        "remove it from there first",
        "REFERENCED",
        held,
    )
    # said as the delete the caller asked for: the environment would go with its owner
    assert cascade == (
        f"deleting agent 'env-owner' would delete environment 'shared-env' with it (it owns it), but {direct[0]}",
        "REFERENCED",
        {**held, "deletedWith": "Agent", "deletedWithId": owner.metadata.id},
    )
    assert raw_keys(stigmer_app.store) == before  # nothing deleted, the owner's default instance neither

    # the user agent lets go (its default instance follows): the owner goes, and its environment with it
    freed = agent_pb2.Agent()
    freed.CopyFrom(user)
    del freed.spec.environment_refs[:]
    kinds.agents.update(freed)
    named = agent_pb2.Agent()
    named.CopyFrom(owner)
    named.spec.environment_refs.add(slug="shared-env")
    kinds.agents.update(named)  # the owner and its default instance name it: they go with it, holding nothing
    kinds.agents.delete(owner.metadata.id)
    with pytest.raises(grpc.RpcError) as gone:
        kinds.environments.get(shared.metadata.id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_tokens_delete_is_refused_while_an_agent_names_the_environment_it_owns(
    stigmer_app: Application, kinds: Kinds
) -> None:
    _, token = make_token(stigmer_app, "local", "admin")
    tokens = KindClient(stigmer_app.channel(), stigmer_app.registry.kind("ApiToken"))
    owned = _owned_environment(kinds, "token env", "ApiToken", token.metadata.id)
    kinds.agent("user agent", env_slugs=["token-env"])
    before = raw_keys(stigmer_app.store)
    message, reason, _ = _refusal(fails(PRECONDITION, lambda: tokens.delete(token.metadata.id)))
    assert "environment 'token-env' is still referenced by agent 'user-agent'" in message and reason == "REFERENCED"
    assert raw_keys(stigmer_app.store) == before
    kept: Any = kinds.environments.get(owned.metadata.id)
    assert kept.metadata.id == owned.metadata.id


# -- a third-party kind with an index of its own --------------------------------------


def _named_parts(widget: Any) -> list[tuple[str, ...]]:
    return [(widget.metadata.org, part) for part in widget.spec.parts]


def _refuse_while_a_part(store: Any, obj: Any, inside: frozenset[str]) -> None:
    """A widget another widget names among its parts (by slug) stays."""
    kind = store.registry.kind("Widget")
    for user_id in store.scan_index(kind, "part", (obj.metadata.org, obj.metadata.slug)):
        if user_id not in inside:
            user = store.get(kind, user_id)
            raise FailedPrecondition(f"widget '{obj.metadata.slug}' is a part of widget '{user.metadata.slug}'")


class GuardedWidgets:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        indexes = (*WIDGET.indexes, IndexSpec("part", _named_parts, org_scoped=False))
        return [attrs.evolve(WIDGET, indexes=indexes, delete_guard=_refuse_while_a_part)]


@pytest.fixture
def guarded(tmp_path: Path, stigmer_store: str | None) -> Iterator[Application]:
    pm = plugin_manager(plugins=[GuardedWidgets()])
    with Application(build_registry(pm), open_store(stigmer_store or tmp_path / "data", durable=False), pm) as app:
        yield app


def _widget(name: str, *, owner: str = "", parts: tuple[str, ...] = ()) -> Any:
    widget = message("Widget")()
    widget.metadata.name = name
    if owner:
        widget.metadata.owner_references.add(kind="Agent", id=owner)
    widget.spec.parts.extend(parts)
    return widget


def test_a_third_party_kinds_guard_holds_its_objects_in_a_cascade(guarded: Application) -> None:
    channel = guarded.channel()
    agents = KindClient(channel, guarded.registry.kind("Agent"))
    widgets = KindClient(channel, guarded.registry.kind("Widget"))
    maker: Any = agents.create(agent("maker"))
    bolt: Any = widgets.create(_widget("bolt", owner=maker.metadata.id))
    frame: Any = widgets.create(_widget("frame", parts=("bolt",)))
    before = raw_keys(guarded.store)
    held = "widget 'bolt' is a part of widget 'frame'"
    assert fails(PRECONDITION, lambda: widgets.delete(bolt.metadata.id)).details() == held
    taken = fails(PRECONDITION, lambda: agents.delete(maker.metadata.id)).details()
    assert taken == f"deleting agent 'maker' would delete widget 'bolt' with it (it owns it), but {held}"
    assert raw_keys(guarded.store) == before
    # a part whose user goes in the same cascade holds nothing
    widgets.delete(frame.metadata.id)
    widgets.create(_widget("crate", owner=maker.metadata.id, parts=("bolt",)))
    agents.delete(maker.metadata.id)
    assert list(widgets.list_page().entries) == []
    assert raw_keys(guarded.store, b"o/") == []
