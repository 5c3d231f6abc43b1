"""The plugin author's guide (docs/plugins.md) stays true to the code: every
hook with its parameters, every field of the declaration values, every phase,
standard step and testing fixture is documented, and nothing documented as a
hook is missing from the code."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from stigmer_core import CustomOperation, IndexSpec, KindDeclaration, Phase, hookspecs
from stigmer_core.kinds.declaration import Reference
from stigmer_core.pipeline.defaults import DEFAULT_PIPELINES
from stigmer_core.testing import fixtures

GUIDE_PATH = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
GUIDE = GUIDE_PATH.read_text()
_SPEC_MARK = f"{hookspecs.PROJECT}_spec"


def _hooks() -> dict[str, Callable[..., Any]]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if name.startswith(f"{hookspecs.PROJECT}_") and callable(fn) and hasattr(fn, _SPEC_MARK)
    }


def _section(heading: str, *, subsections: bool = True) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level
    (or of any level, without ``subsections``)."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", GUIDE, re.MULTILINE)
    assert match is not None, f"docs/plugins.md has no heading {heading!r}"
    level = len(match.group(1)) if subsections else 6
    rest = GUIDE[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _undocumented(names: list[str], text: str) -> list[str]:
    return [name for name in names if f"`{name}`" not in text]


def test_hooks_are_found() -> None:
    assert {"stigmer_kinds", "stigmer_pipeline_steps"} <= set(_hooks())


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hook_is_documented_with_its_parameters(name: str) -> None:
    params = ", ".join(inspect.signature(_hooks()[name]).parameters)
    heading = f"### `{name}({params})`"
    assert heading in GUIDE, f"docs/plugins.md must document the hook as a heading: {heading}"
    body = _section(f"`{name}({params})`")
    assert len(body.split()) >= 15, f"the section on {name} says too little to be its semantics"


def test_no_documented_hook_is_missing_from_the_code() -> None:
    documented = set(re.findall(r"^### `(stigmer_[a-z_]+)\(", GUIDE, re.MULTILINE))
    assert documented == set(_hooks())


@pytest.mark.parametrize(
    ("cls", "heading"),
    [
        (KindDeclaration, "Declaring a kind"),
        (IndexSpec, "Indexes"),
        (Reference, "References"),
        (CustomOperation, "Custom rpcs"),
    ],
)
def test_every_declaration_field_is_documented(cls: type, heading: str) -> None:
    names = [field.name for field in attrs.fields(cls)]
    missing = _undocumented(names, _section(heading))
    assert not missing, f"{cls.__name__} fields not documented under '{heading}' in docs/plugins.md: {missing}"


def test_every_kind_declaration_field_has_a_table_row() -> None:
    table = _section("Declaring a kind", subsections=False)
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert rows == {field.name for field in attrs.fields(KindDeclaration)}


def test_every_phase_and_standard_step_is_documented() -> None:
    text = _section("Steps and phases")
    assert not _undocumented([phase.name for phase in Phase], text)
    standard = sorted({step.name for steps in DEFAULT_PIPELINES.values() for step in steps})
    assert not _undocumented(standard, text + _section("The standard pipelines"))


def test_every_default_pipeline_is_documented_in_order() -> None:
    text = _section("The standard pipelines")
    for operation, steps in DEFAULT_PIPELINES.items():
        row = re.search(rf"^\| `{operation}` \| (.+) \|$", text, re.MULTILINE)
        assert row is not None, f"no row for {operation}"
        named = re.findall(r"`([a-z_]+)`", row.group(1))
        assert named == [step.name for step in steps], (operation, named)


def test_every_testing_fixture_is_documented() -> None:
    names = [name for name, value in vars(fixtures).items() if name.startswith("stigmer_") and callable(value)]
    assert names, "the stigmer pytest plugin defines no fixtures"
    assert not _undocumented(names, _section("Testing a kind"))


def test_the_guide_links_resolve() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+|[a-z][^):#]*\.md)[^)]*\)", GUIDE):
        assert (GUIDE_PATH.parent / target).exists(), target


_IMPORT = re.compile(r"^[ \t]*from (stigmer_core[\w.]*) import (\([^)]*\)|[^\n]*)", re.MULTILINE)


def test_every_import_from_stigmer_core_the_guide_shows_resolves() -> None:
    """A plugin author copies these lines: each name must be where the guide says it is."""
    import importlib

    code = "\n".join(re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL))
    found = _IMPORT.findall(code)
    assert any(module == "stigmer_core" and "StartupError" in names for module, names in found)
    for module, names in found:
        listed = re.sub(r"#[^\n]*", "", names).strip("()")
        for name in filter(None, (part.split(" as ")[0].strip() for part in listed.split(","))):
            assert hasattr(importlib.import_module(module), name), f"docs/plugins.md: from {module} import {name}"


def test_the_store_methods_a_step_uses_are_documented_with_their_signatures() -> None:
    from stigmer_core.kinds.resources import Resources

    rows = re.findall(r"^\| `(\w+)\(([^)]*)\)` \|", _section("The store a step uses"), re.MULTILINE)
    assert rows, "docs/plugins.md documents no store method"
    for name, documented in rows:
        params = list(inspect.signature(getattr(Resources, name)).parameters.values())[1:]  # without self
        shown = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        assert documented == ", ".join(shown + (["*", *keyword] if keyword else [])), name
    context_row = re.search(r"^\| `store` \| (.+) \|$", _section("The request context"), re.MULTILINE)
    assert context_row is not None
    assert set(re.findall(r"`(\w+)`", context_row.group(1))) == {name for name, _ in rows}
