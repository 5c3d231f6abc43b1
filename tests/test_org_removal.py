"""``org_removal.remove_org`` on every engine: what it refuses, and what it must not forget while
objects it cannot see are left. The command around it: tests/cli/test_org_delete.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stigmer_core import Application, InvalidArgument
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.org_removal import ROUNDS, UNINSTALLED, count, remove_org
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from tests.auth_support import make_token
from tests.gizmo_kind import GizmoPlugin
from tests.gizmo_kind import message as gizmo_message


def _opened(tmp_path: Path, store: str | None, *plugins: object) -> Application:
    pm = plugin_manager(plugins=list(plugins))
    return Application(build_registry(pm), open_store(store or tmp_path / "data", durable=False), pm)


def _history(app: Application, org: str) -> list[int]:
    with app.store.read() as txn:
        return sorted({r for r, _ in txn.events(0, [org])} - {r for r, _ in txn.events(0, [])})


def test_the_empty_org_is_refused_before_anything_is_deleted(tmp_path: Path, stigmer_store: str | None) -> None:
    """A list with no org lists every org: "" deleted every org's objects before it was refused."""
    with _opened(tmp_path, stigmer_store) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        agents.create(agent_pb2.Agent(metadata={"name": "kept", "org": "acme"}))
        with pytest.raises(InvalidArgument, match="no org named"):
            remove_org(app, "")
        assert count(app, "acme") == {"Agent": 1, "AgentInstance": 1}


def test_objects_of_a_kind_not_installed_keep_the_org_and_its_history(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """They cannot be listed here, but the org's usage counter counts them: its events are kept,
    and the command says what to do; with the plugin installed it removes them."""
    with _opened(tmp_path, stigmer_store, GizmoPlugin()) as app:
        gizmos = KindClient(app.channel(), app.registry.kind("Gizmo"))
        for name in ("one", "two"):
            gizmo = gizmo_message("Gizmo")()
            gizmo.metadata.name, gizmo.metadata.org = name, "gone"
            gizmos.create(gizmo)
        KindClient(app.channel(), app.registry.kind("Agent")).create(
            agent_pb2.Agent(metadata={"name": "a", "org": "gone"})
        )
    with _opened(tmp_path, stigmer_store) as app:  # no Gizmo plugin here
        # what a dry run shows: it left them out, and the run then stopped on them
        assert count(app, "gone") == {"Agent": 1, "AgentInstance": 1, UNINSTALLED: 2}
        removal = remove_org(app, "gone")
        assert removal.deleted == {"Agent": 1, "AgentInstance": 1} and removal.forgotten == 0
        [(what, reasons)] = removal.left.items()
        assert "not installed" in what and "2 objects" in reasons[0], removal.left
        assert _history(app, "gone")  # kept while the org holds anything
    with _opened(tmp_path, stigmer_store, GizmoPlugin()) as app:
        removal = remove_org(app, "gone")
        assert removal.deleted == {"Gizmo": 2} and not removal.left and removal.forgotten > 0
        assert _history(app, "gone") == []


def _token_owning_a_named_environment(app: Application, org: str) -> str:
    """A token whose delete is refused at first: it owns an environment an agent still names."""
    _, token = make_token(app, org, "editor", "holder")
    env = environment_pb2.Environment()
    env.metadata.name, env.metadata.org = "held", org
    env.metadata.owner_references.add(kind="ApiToken", id=token.metadata.id)
    KindClient(app.channel(), app.registry.kind("Environment")).create(env)
    agent = agent_pb2.Agent(metadata={"name": "names it", "org": org})
    agent.spec.environment_refs.add(slug="held")
    KindClient(app.channel(), app.registry.kind("Agent")).create(agent)
    return str(token.metadata.id)


def test_a_token_deleted_in_a_later_pass_is_waited_for_and_what_its_holder_wrote_goes_too(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """The wait for daemons' token caches followed only tokens the first pass deleted: one
    refused there (it owned an object still named) went later, with no wait, and its holder
    could write into the org after the command said it was removed."""
    with _opened(tmp_path, stigmer_store) as app:
        token_id = _token_owning_a_named_environment(app, "gone")
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        token_kind = app.registry.kind("ApiToken")
        stored_at_each_wait: list[bool] = []

        def wait(seconds: float) -> None:  # the window a daemon's cache still takes the token in
            assert seconds == 5.0
            with app.store.read() as txn:
                stored_at_each_wait.append(txn.get(token_kind.object_key(token_id)) is not None)
            agents.create(
                agent_pb2.Agent(metadata={"name": f"written meanwhile {len(stored_at_each_wait)}", "org": "gone"})
            )

        removal = remove_org(app, "gone", tokens_settle=5.0, sleep=wait)
        assert False in stored_at_each_wait  # a wait came after the token was gone
        assert not removal.left and removal.forgotten > 0, removal
        assert count(app, "gone") == {}


def _late_writes(app: Application, org: str, times: int) -> Callable[[], None]:
    """Make ``app.store`` take a create in ``org`` just before each of the next ``times``
    transactions that forget an org's events: another daemon's caller, between the removal's
    last look and its forget. Returns what puts the store back."""
    store: Any = app.store
    real = store.transact
    agents = KindClient(app.channel(), app.registry.kind("Agent"))
    left = [times]

    def transact(fn: Any) -> Any:
        if "_forget_if_empty" in getattr(fn, "__qualname__", "") and left[0]:
            left[0] -= 1
            agents.create(agent_pb2.Agent(metadata={"name": f"late {left[0]}", "org": org}))
        return real(fn)

    store.transact = transact
    return lambda: setattr(store, "transact", real)


def test_an_object_written_just_before_the_forget_is_deleted_before_the_events_go(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """The last look and the forget were two transactions: an object written between them was
    left, its events forgotten, and the org reported removed."""
    with _opened(tmp_path, stigmer_store) as app:
        KindClient(app.channel(), app.registry.kind("Agent")).create(
            agent_pb2.Agent(metadata={"name": "a", "org": "gone"})
        )
        restore = _late_writes(app, "gone", 1)
        try:
            removal = remove_org(app, "gone")
        finally:
            restore()
        assert not removal.left and removal.forgotten > 0, removal
        assert count(app, "gone") == {} and _history(app, "gone") == []


def test_writes_that_keep_coming_keep_the_org_s_history_and_are_named(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    with _opened(tmp_path, stigmer_store) as app:
        KindClient(app.channel(), app.registry.kind("Agent")).create(
            agent_pb2.Agent(metadata={"name": "a", "org": "gone"})
        )
        restore = _late_writes(app, "gone", ROUNDS)
        try:
            removal = remove_org(app, "gone")
        finally:
            restore()
        assert removal.forgotten == 0 and list(removal.left) == ["(written meanwhile)"], removal
        assert count(app, "gone") and _history(app, "gone")  # what is left keeps its events
