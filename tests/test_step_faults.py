"""A kind's own code failing while serving: the answer and the log name the step or index at
fault, whatever it raised, and a failure while rebuilding an index at startup names it too.

Driven through a real daemon (LMDB, gRPC on 127.0.0.1) with the runtime-built Widget kind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, Phase, StartupError, hookimpl, step
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.declaration import IndexSpec, KindDeclaration
from stigmer_core.plugins import plugin_manager
from tests.widget_kind import WIDGET


class PantryError(Exception):
    """A plugin's own exception type."""


def _pm(decl: KindDeclaration) -> Any:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    pm = plugin_manager(entry_points=False)
    pm.register(Plugin(), name="acme-widgets")
    return pm


def _widget(name: str) -> Any:
    made = WIDGET.resource()
    made.metadata.name = name
    made.spec.owner_id = "someone"
    return made


def _no_owner_reference() -> KindDeclaration:
    return attrs.evolve(WIDGET, references=())


@pytest.mark.parametrize(
    "raised", [RuntimeError("no pantry"), OSError(5, "disk said no"), PantryError("shelf missing")]
)
def test_any_exception_from_a_step_names_the_step_and_is_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, raised: Exception
) -> None:
    @step(Phase.KIND)
    def stock_pantry(ctx: Any) -> None:
        raise raised

    decl = attrs.evolve(_no_owner_reference(), steps={"create": (stock_pantry,)})
    caplog.set_level(logging.ERROR)
    with Application.open(tmp_path, pm=_pm(decl)) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        with pytest.raises(grpc.RpcError) as caught:
            widgets.create(_widget("w"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        name = type(raised).__name__
        assert caught.value.details() == (
            f"internal error in step 'stock_pantry' of Widget create: {name} (the server's log has its traceback)"
        )
        assert list(widgets.list_all()) == []
    logged = [r for r in caplog.records if "stock_pantry" in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[1] is raised
    assert "'acme-widgets'" in logged[0].getMessage() and str(raised) in logged[0].getMessage()


def _failing_values(widget: Any) -> list[tuple[str, ...]]:
    if widget.metadata.name == "bad":
        raise ValueError("no colour for bad")
    return [(widget.metadata.name,)]


def test_an_index_values_function_that_raises_is_named_not_the_persisting_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    decl = attrs.evolve(_no_owner_reference(), indexes=(*WIDGET.indexes, IndexSpec("named", _failing_values)))
    caplog.set_level(logging.ERROR)
    with Application.open(tmp_path, pm=_pm(decl)) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        widgets.create(_widget("good"))
        with pytest.raises(grpc.RpcError) as caught:
            widgets.create(_widget("bad"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == "plugin 'acme-widgets': kind 'Widget': index 'named': values raised ValueError"
        assert [w.metadata.name for w in widgets.list_all()] == ["good"]
    logged = [r for r in caplog.records if "index 'named'" in r.getMessage()]
    assert logged and isinstance(logged[0].exc_info[1], ValueError)  # type: ignore[index]


def test_an_index_values_function_failing_in_the_rebuild_at_startup_names_plugin_kind_and_index(
    tmp_path: Path,
) -> None:
    with Application.open(tmp_path, pm=_pm(_no_owner_reference())) as app:
        made = KindClient(app.channel(), app.registry.kind("Widget")).create(_widget("bad"))
    rebuilt = attrs.evolve(_no_owner_reference(), indexes=(*WIDGET.indexes, IndexSpec("named", _failing_values)))
    with pytest.raises(StartupError) as caught:
        Application.open(tmp_path, pm=_pm(rebuilt)).close()
    assert str(caught.value) == (
        "plugin 'acme-widgets': kind 'Widget': index 'named': values raised ValueError: no colour for bad "
        f"(rebuilding its index at startup from the stored widget {made.metadata.id})"
    )


class _Audit:
    """A plugin adding a step to another plugin's kind (Agent's create), as an audit log would."""

    @hookimpl
    def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
        @step(Phase.AUTHORIZE)
        def audit_everything(ctx: Any) -> None:
            raise RuntimeError("audit broke")

        return [audit_everything] if kind.name == "Agent" and operation == "create" else []


def _with_widgets(decl: KindDeclaration, *others: tuple[object, str]) -> Any:
    """Every installed kind (Agent's plugin is 'agent'), Widget from 'acme-widgets', and ``others``."""

    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    pm = plugin_manager()
    pm.register(Plugin(), name="acme-widgets")
    for plugin, name in others:
        pm.register(plugin, name=name)
    return pm


def _faults(caplog: pytest.LogCaptureFixture, where: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and where in r.getMessage()]


def test_a_step_another_plugin_added_to_a_kind_is_that_plugins_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log named the kind's plugin ('agent'; a bug in that code) for a step 'acme-audit' added."""
    caplog.set_level(logging.ERROR)
    with Application.open(tmp_path, pm=_with_widgets(_no_owner_reference(), (_Audit(), "acme-audit"))) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        agent = app.registry.kind("Agent").resource_cls()
        agent.metadata.name = "a"  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as caught:
            agents.create(agent)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    (logged,) = _faults(caplog, "audit_everything")
    assert "(plugin 'acme-audit'; a bug in that code)" in logged, logged


def _agent_and_widget(app: Application, owned: bool) -> tuple[KindClient, str]:
    agents = KindClient(app.channel(), app.registry.kind("Agent"))
    agent = app.registry.kind("Agent").resource_cls()
    agent.metadata.name = "a"  # type: ignore[attr-defined]
    made: Any = agents.create(agent)
    widget = _widget("w")
    if owned:
        widget.spec.owner_id = ""
        widget.metadata.owner_references.add(kind="Agent", id=made.metadata.id)
    else:
        widget.spec.owner_id = made.metadata.id
    KindClient(app.channel(), app.registry.kind("Widget")).create(widget)
    return agents, str(made.metadata.id)


def test_a_referrers_live_check_that_fails_is_its_own_plugins_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting an agent a widget names: the widget's `live` raised, and the log blamed 'agent'."""

    def live(widget: Any) -> bool:
        raise RuntimeError("live broke")

    ref = attrs.evolve(WIDGET.references[0], live=live)
    caplog.set_level(logging.ERROR)
    with Application.open(tmp_path, pm=_with_widgets(attrs.evolve(WIDGET, references=(ref,)))) as app:
        agents, agent_id = _agent_and_widget(app, owned=False)
        with pytest.raises(grpc.RpcError) as caught:
            agents.delete(agent_id)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "Reference.live of Widget.spec.owner_id" in (caught.value.details() or ""), caught.value.details()
    (logged,) = _faults(caplog, "Reference.live of Widget")
    assert "(plugin 'acme-widgets'; a bug in that code)" in logged, logged


def test_an_owned_objects_delete_guard_that_fails_is_its_own_plugins_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cascade from an agent to a widget it owns: the widget's guard raised, and the log blamed 'agent'."""

    def guard(store: Any, widget: Any, inside: Any) -> None:
        raise TypeError("guard broke")

    caplog.set_level(logging.ERROR)
    with Application.open(tmp_path, pm=_with_widgets(attrs.evolve(_no_owner_reference(), delete_guard=guard))) as app:
        agents, agent_id = _agent_and_widget(app, owned=True)
        with pytest.raises(grpc.RpcError) as caught:
            agents.delete(agent_id)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert agents.get(agent_id) is not None  # nothing was deleted
    (logged,) = _faults(caplog, "delete_guard of Widget")
    assert "(plugin 'acme-widgets'; a bug in that code)" in logged, logged
