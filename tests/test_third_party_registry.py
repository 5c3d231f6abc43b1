"""Two installed plugins that claim the same kind, or overlapping key
prefixes, stop startup with a message naming both.

The plugins here are real modules found through real ``stigmer.kinds``
entry points: each test writes distributions (a ``.dist-info`` with its
``entry_points.txt``) into a directory on ``sys.path``, exactly what
``pip install`` leaves behind, and the example Prompt package is one of
them (taken from ``examples/`` when it is not installed already).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import pytest

from stigmer_core import CustomOperation, KindDeclaration, RegistryError, hookimpl
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.plugins import ENTRY_POINT_GROUP, plugin_manager
from tests.gizmo_kind import GIZMO
from tests.widget_kind import WIDGET

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stigmer-kind-prompt"
EXAMPLE_ENTRY_POINT = "acme-prompt"

class Install(Protocol):
    def __call__(self, distribution: str, entry_point: str, source: str | None, target: str = "") -> None: ...


def _entry_point_names() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(distribution, entry_point, module_source, target="")``: a one-module plugin
    distribution whose entry point names the module, or ``target`` (``module:attribute``);
    ``module_source`` None: a module that is not there."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def add(distribution: str, entry_point: str, source: str | None, target: str = "") -> None:
        module = distribution.replace("-", "_")
        if source is not None:
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        _dist_info(site, distribution, entry_point, target or module)
        created.append(module)

    if EXAMPLE_ENTRY_POINT not in _entry_point_names():
        monkeypatch.syspath_prepend(str(EXAMPLE))
        _dist_info(site, "stigmer-kind-prompt", EXAMPLE_ENTRY_POINT, "acme_prompt.plugin")
    yield add
    for module in created:
        sys.modules.pop(module, None)


def _dist_info(site: Path, distribution: str, entry_point: str, target: str) -> None:
    info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point} = {target}\n")


def _startup_error() -> str:
    with pytest.raises(RegistryError) as caught:
        build_registry(plugin_manager())
    return str(caught.value)


def _forked_prompt(**changes: str) -> str:
    return f"""
        import attrs
        from stigmer_core import KindDeclaration, hookimpl
        from acme_prompt.plugin import PROMPT

        FORK = attrs.evolve(PROMPT, **{changes!r})

        @hookimpl
        def stigmer_kinds() -> list[KindDeclaration]:
            return [FORK]
    """


def test_the_example_plugin_loads_through_its_entry_point(install: Install) -> None:
    registry = build_registry(plugin_manager())
    prompt = registry.kind("Prompt")
    assert prompt.plugin == EXAMPLE_ENTRY_POINT
    assert "/acme.prompt.v1.PromptQueryController/render" in prompt.methods


def test_the_same_kind_from_two_plugins_names_both(install: Install) -> None:
    install("prompt-fork", "prompt-fork", _forked_prompt(id_prefix="prf", key_prefix="forked-prompts"))
    message = _startup_error()
    assert "kind 'Prompt' is declared twice" in message
    assert f"plugin '{EXAMPLE_ENTRY_POINT}'" in message and "plugin 'prompt-fork'" in message


def test_the_same_kind_name_in_another_case_is_the_same_kind(install: Install) -> None:
    install("prompt-shout", "prompt-shout", _forked_prompt(name="PROMPT", id_prefix="psh", key_prefix="shouts"))
    message = _startup_error()
    assert "declared twice" in message and "'prompt-shout'" in message and f"'{EXAMPLE_ENTRY_POINT}'" in message


def test_a_key_prefix_extending_another_names_both(install: Install) -> None:
    install(
        "prompt-archive",
        "prompt-archive",
        _forked_prompt(name="PromptArchive", id_prefix="pra", key_prefix="prompts-archive"),
    )
    message = _startup_error()
    assert "key prefixes overlap: " in message
    assert "'prompts'" in message and "'prompts-archive'" in message
    assert f"plugin '{EXAMPLE_ENTRY_POINT}'" in message and "plugin 'prompt-archive'" in message


def test_a_key_prefix_inside_a_first_party_one_names_both(install: Install) -> None:
    install("agent-notes", "agent-notes", _forked_prompt(name="AgentNote", id_prefix="ant", key_prefix="agent"))
    message = _startup_error()
    assert "key prefixes overlap: " in message and "'agent'" in message and "'agents'" in message
    assert "plugin 'agent'" in message and "plugin 'agent-notes'" in message


def test_an_id_prefix_taken_by_another_plugin_names_both(install: Install) -> None:
    install("prompt-copy", "prompt-copy", _forked_prompt(name="PromptCopy", key_prefix="copies"))
    message = _startup_error()
    assert "id prefix 'prm'" in message
    assert f"plugin '{EXAMPLE_ENTRY_POINT}'" in message and "plugin 'prompt-copy'" in message


def test_plugins_given_explicitly_are_checked_the_same_way(install: Install) -> None:
    """``plugin_manager(plugins=[...])`` (tests, embedding) goes through the same checks."""
    install("prompt-twin", "prompt-twin", _forked_prompt(id_prefix="ptw", key_prefix="twins"))
    modules = [importlib.import_module(name) for name in ("acme_prompt.plugin", "prompt_twin")]
    pm = plugin_manager(entry_points=False, plugins=modules)
    with pytest.raises(RegistryError) as caught:
        build_registry(pm)
    message = str(caught.value)
    assert "kind 'Prompt' is declared twice" in message
    assert "plugin 'acme_prompt.plugin'" in message and "plugin 'prompt_twin'" in message


def test_an_entry_point_to_a_missing_module_names_it(install: Install) -> None:
    install("ghost-kind", "ghost", None)
    message = _startup_error()
    assert "plugin 'ghost': entry point ghost = ghost_kind (distribution 'ghost-kind') cannot be loaded" in message
    assert "ModuleNotFoundError" in message


def test_a_plugin_module_failing_at_import_names_its_entry_point(install: Install) -> None:
    install(
        "wide-prompt",
        "wide-prompt",
        """
        from stigmer_core import PrinterColumn

        COLUMNS = (PrinterColumn("TEMPLATE", "spec.template", type="text"),)
        """,
    )
    message = _startup_error()
    assert "plugin 'wide-prompt': entry point wide-prompt = wide_prompt" in message
    assert "ValueError: printer column 'TEMPLATE': type 'text' is not one of 'string', 'integer'" in message


def test_a_plugin_whose_stigmer_kinds_raises_is_named(install: Install) -> None:
    install(
        "broken-prompt",
        "broken-prompt",
        """
        from stigmer_core import KindDeclaration, hookimpl

        @hookimpl
        def stigmer_kinds() -> list[KindDeclaration]:
            raise LookupError("no region configured")
        """,
    )
    assert _startup_error() == "plugin 'broken-prompt': stigmer_kinds raised LookupError: no region configured"


_DECLARES_ONLY = """
    from acme_prompt.plugin import PROMPT

    FORK = PROMPT
"""


def test_an_entry_point_to_a_module_without_hooks_names_it(install: Install) -> None:
    """The package's ``__init__`` rather than its plugin module: it would register nothing, and
    the kind would only show up missing later."""
    install("prompt-package", "prompt-package", _DECLARES_ONLY)
    message = _startup_error()
    assert message.startswith("plugin 'prompt-package': entry point prompt-package = prompt_package implements no hook")
    assert "not at module 'prompt_package'" in message


def test_an_entry_point_to_a_declaration_names_it(install: Install) -> None:
    install("prompt-decl", "prompt-decl", _DECLARES_ONLY, target="prompt_decl:FORK")
    message = _startup_error()
    assert message.startswith("plugin 'prompt-decl': entry point prompt-decl = prompt_decl:FORK implements no hook")
    assert "not at a KindDeclaration" in message


def test_a_plugin_given_explicitly_without_hooks_is_refused(install: Install) -> None:
    install("prompt-bare", "prompt-bare", _DECLARES_ONLY)
    with pytest.raises(RegistryError, match=r"^plugin 'prompt_bare' implements no hook"):
        plugin_manager(entry_points=False, plugins=[importlib.import_module("prompt_bare")])


def test_a_fork_bound_to_the_same_services_names_both(install: Install) -> None:
    """A fork with a name and prefixes of its own but the original's protos would take over the
    original's rpcs: its objects unreachable, ``apply`` of ``kind: Prompt`` writing the fork."""
    install(
        "prompt-v2",
        "prompt-v2",
        _forked_prompt(name="PromptV2", id_prefix="pv2", key_prefix="prompttwo", plural="promptv2s"),
    )
    message = _startup_error()
    assert message.startswith("service acme.prompt.v1.PromptCommandController is bound to kinds 'Prompt' and 'PromptV2'")
    assert f"plugin '{EXAMPLE_ENTRY_POINT}'" in message and "plugin 'prompt-v2'" in message


def _explicit(*declarations: object) -> str:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[object]:
            return list(declarations)

    pm = plugin_manager(entry_points=False)
    pm.register(Plugin(), name="acme")
    with pytest.raises(RegistryError) as caught:
        build_registry(pm)
    return str(caught.value)


def test_a_fork_of_the_same_resource_message_names_both() -> None:
    """Reflection knows a kind by its resource message: two kinds of one message would show as one."""
    fork = attrs.evolve(
        GIZMO, name="Doohickey", id_prefix="dhk", key_prefix="doohickeys",
        command_service=WIDGET.command_service, query_service=WIDGET.query_service,
    )  # fmt: skip
    message = _explicit(GIZMO, fork)
    assert message.startswith("resource message tests.gizmo.v1.Gizmo is bound to kinds 'Doohickey' and 'Gizmo'")


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"plural": "widget"}, "'widget' is the name of kind 'Widget' and the plural of kind 'Gizmo'"),
        ({"aliases": ("Widget",)}, "'widget' is the name of kind 'Widget' and an alias of kind 'Gizmo'"),
        ({"plural": "WIDGETS"}, "'widgets' is the implied plural of kind 'Widget' and the plural of kind 'Gizmo'"),
        ({"aliases": ("w",)}, "'w' is an alias of kind 'Widget' and an alias of kind 'Gizmo'"),
    ],
)
def test_a_plural_or_alias_naming_another_kind_names_both(change: dict[str, Any], shown: str) -> None:
    """``stigmer get widgets`` must name one kind, not whichever registered first."""
    widget = attrs.evolve(WIDGET, aliases=("w",))
    message = _explicit(widget, attrs.evolve(GIZMO, **change))
    assert message.startswith("kind names overlap: "), message
    assert shown in message, message


def _widget_listing_by(*arguments: str) -> KindDeclaration:
    steps = (standard.validate, standard.authorize, standard.list_by(*arguments))
    return attrs.evolve(WIDGET, operations={**WIDGET.operations, "listByOwner": CustomOperation(steps=steps)})


@pytest.mark.parametrize(
    ("arguments", "shown"),
    [
        (("nope", "owner_id"), "list_by('nope', 'owner_id') names unknown index 'nope' (declared: 'owner', 'color')"),
        (("owner", "owner"), "request field 'owner' does not exist: tests.widget.v1.ListByOwnerRequest has no field"),
        (("owner", "page_size"), "request field 'page_size': page_size is neither a string nor an enum field"),
    ],
)
def test_a_list_by_reading_what_is_not_there_is_refused_at_startup(arguments: tuple[str, ...], shown: str) -> None:
    """Served, every call of the rpc answered INTERNAL."""
    message = _explicit(_widget_listing_by(*arguments))
    assert message.startswith(
        "plugin 'acme': kind 'Widget': rpc tests.widget.v1.WidgetQueryController.listByOwner: list_by("
    ), message
    assert shown in message, message


def test_a_list_by_on_an_rpc_answering_another_message_is_refused() -> None:
    steps = (standard.authorize, standard.list_by("owner", "value"))
    widget = attrs.evolve(WIDGET, operations={**WIDGET.operations, "setPhase": CustomOperation(steps=steps, writes=True)})
    message = _explicit(widget)
    assert "rpc tests.widget.v1.WidgetCommandController.setPhase: list_by('owner', 'value'): " in message
    assert "tests.widget.v1.SetPhaseRequest lacks 'page_size' and 'page_token'" in message
