"""Declaration mistakes that passed startup and failed later (INTERNAL on every request, a crash
of ``stigmer get``), or were refused with a message naming no field: each is refused when the
registry is built, naming the plugin, the kind and the field, and saying what is allowed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from stigmer_core import (
    Access,
    CustomOperation,
    IndexSpec,
    KindDeclaration,
    Phase,
    PrinterColumn,
    Reference,
    RegistryError,
    hookimpl,
)
from stigmer_core.cli.render import column_value
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import Registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.step import FunctionStep
from stigmer_core.plugins import plugin_manager
from tests.gizmo_kind import GIZMO, message


def _build(declare: Callable[[], KindDeclaration]) -> Registry:
    """The registry of one plugin, ``acme``, whose ``stigmer_kinds`` returns what ``declare()``
    makes: a mistake the declaration refuses as it is made is the hook's, as it is the plugin
    module's import when the declaration is made at module level."""

    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [declare()]

    pm = plugin_manager(entry_points=False)
    pm.register(Plugin(), name="acme")
    return build_registry(pm)


def _refusal(declare: Callable[[], KindDeclaration]) -> str:
    with pytest.raises(RegistryError) as caught:
        _build(declare)
    return str(caught.value)


_THREE = 'access={"delete": 3}'
_NIL, _ADMN, _CLONE = 'IndexSpec("nil", None)', '"ADMN"', 'operations={"clone": (standard.validate,)}'


def _here(code: str) -> str:
    """Where the line of this file that refuses ``code`` is, as a start-up error names the
    plugin's line it came from."""
    with open(__file__, encoding="utf-8") as source:
        line = next(n for n, text in enumerate(source, 1) if "_refusal(" in text and code in text)
    return f"{__file__}:{line}"


def _columns(*columns: PrinterColumn) -> Callable[[], KindDeclaration]:
    return lambda: attrs.evolve(GIZMO, printer_columns=columns)


# 1. A printer column's type must be one its field can be shown as.


@pytest.mark.parametrize(
    ("kind", "path", "shown", "needs"),
    [
        ("date", "spec.note", "string", "a singular google.protobuf.Timestamp field (shown as an age)"),
        ("date", "spec.low", "int32", "a singular google.protobuf.Timestamp field"),
        ("integer", "spec.note", "string", "an integer field"),
        ("number", "metadata.name", "string", "a number field (float, double or an integer)"),
        ("boolean", "spec.high", "int32", "a bool field"),
        ("integer", "metadata.created_at", "message google.protobuf.Timestamp", "an integer field"),
        ("string", "metadata.labels", "map<string, string>", "any field but a map"),
    ],
)
def test_a_column_of_a_type_its_field_cannot_be_shown_as_is_refused(
    kind: str, path: str, shown: str, needs: str
) -> None:
    """A ``date`` column on a string passed startup, then ``stigmer get gizmos`` stopped with
    "AttributeError: 'str' object has no attribute 'seconds'"."""
    message = _refusal(_columns(PrinterColumn("when", path, type=kind)))
    assert message.startswith(
        f"plugin 'acme': kind 'Gizmo': printer column 'when': {path!r} is {shown}; a column of type {kind!r} needs {needs}"
    ), message


def test_a_column_reading_into_a_repeated_field_is_refused() -> None:
    message = _refusal(_columns(PrinterColumn("owner", "metadata.owner_references.kind")))
    assert message.startswith(
        "plugin 'acme': kind 'Gizmo': printer column 'owner': 'metadata.owner_references.kind' reads into "
        "'owner_references', which is repeated message"
    ), message


@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        ("date", "metadata.created_at", "5m"),
        ("integer", "spec.low", "3"),
        ("number", "spec.high", "7"),
        ("string", "spec.note", "hello"),
        ("string", "metadata.tags", "a,b"),
        ("string", "metadata.created_at", '"2024-01-01T00:00:00Z"'),
    ],
)
def test_a_column_its_field_can_be_shown_as_is_served_and_shown(kind: str, path: str, expected: str) -> None:
    """What startup lets through, ``stigmer get`` shows."""
    column = PrinterColumn("c", path, type=kind)
    registry = _build(_columns(column))
    gizmo: Any = message("Gizmo")()
    gizmo.spec.low, gizmo.spec.high, gizmo.spec.note = 3, 7, "hello"
    gizmo.metadata.tags.extend(["a", "b"])
    gizmo.metadata.created_at.FromDatetime(datetime(2024, 1, 1, tzinfo=UTC))
    now = datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert column_value(registry.kind("Gizmo").decl.printer_columns[0], gizmo, now) == expected


# 2. An index needs its function.


def test_an_index_without_a_values_function_is_refused() -> None:
    """``IndexSpec("nil", None)`` was served, and every write of the kind failed INTERNAL with
    "index 'nil': values raised TypeError"."""
    message = _refusal(lambda: attrs.evolve(GIZMO, indexes=(IndexSpec("nil", None),)))  # type: ignore[arg-type]
    assert message == (
        "plugin 'acme': stigmer_kinds raised TypeError: IndexSpec 'nil': values must be a function, values(obj) "
        "returning the object's index entries (such as lambda obj: [(obj.spec.format,)]), not NoneType "
        f"(at {_here(_NIL)})"  # the plugin's line: the spec is refused before its kind is built
    )


# 3. Every declared function must take the arguments it is called with.


def _guard(store: Any, obj: Any) -> None:
    """A delete guard that forgot ``inside``."""


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        (
            {"delete_guard": lambda: None},
            "delete_guard is called as delete_guard(store, obj, inside), which <lambda>() cannot take: "
            "too many positional arguments",
        ),
        (
            {"delete_guard": _guard},
            "delete_guard is called as delete_guard(store, obj, inside), which _guard(store, obj) cannot take: "
            "too many positional arguments",
        ),
        (
            {"redact": lambda obj, field: None},
            "redact is called as redact(obj), which <lambda>(obj, field) cannot take: "
            "missing a required argument: 'field'",
        ),
        ({"redacts": lambda: True}, "redacts is called as redacts(obj), which <lambda>() cannot take"),
        ({"export_fill": lambda obj: None}, "export_fill is called as export_fill(obj, call), which <lambda>(obj)"),
        ({"export_history": lambda obj: []}, "export_history is called as export_history(obj, call), which"),
        (
            {"import_history": lambda obj, call: 0},
            "import_history is called as import_history(obj, history, call), which <lambda>(obj, call) cannot take",
        ),
        (
            {"indexes": (IndexSpec("pair", lambda obj, org: []),)},
            "the values of index 'pair' is called as values(obj), which <lambda>(obj, org) cannot take: "
            "missing a required argument: 'org'",
        ),
        (
            {"references": (Reference("spec.note", "Gizmo", live=lambda: True),)},
            "the live of reference 'spec.note' is called as live(referrer), which <lambda>() cannot take",
        ),
        (
            {"steps": {"create": (FunctionStep("stamp", Phase.KIND, lambda: None),)}},
            "steps of 'create': step 'stamp' is called as step(ctx), which <lambda>() cannot take",
        ),
        (
            {"redact": lambda obj, *, strict: None},
            "redact is called as redact(obj), which <lambda>(obj, *, strict) cannot take: "
            "missing a required argument: 'strict'",
        ),
    ],
)
def test_a_declared_function_that_cannot_take_its_arguments_is_refused(changes: dict[str, Any], said: str) -> None:
    """``delete_guard=lambda: None`` was served, and every delete of the kind failed INTERNAL."""
    message = _refusal(lambda: attrs.evolve(GIZMO, **changes))
    assert message.startswith(f"plugin 'acme': kind 'Gizmo': {said}"), message


def test_a_custom_operations_step_that_cannot_take_the_context_is_refused() -> None:
    clone = CustomOperation(steps=(standard.authorize, FunctionStep("clone", Phase.PERSIST, lambda c, n: None)))
    message = _refusal(lambda: attrs.evolve(GIZMO, operations={"clone": clone}))
    assert message.startswith(
        "plugin 'acme': kind 'Gizmo': operation 'clone': step 'clone' is called as step(ctx), which "
        "<lambda>(c, n) cannot take: missing a required argument: 'n'"
    ), message


def test_functions_that_take_their_arguments_or_tell_nothing_are_served() -> None:
    """Defaults, ``*args`` and a builtin without a signature (``iter``) are let through."""
    registry = _build(
        lambda: attrs.evolve(
            GIZMO,
            delete_guard=lambda store, obj, inside, strict=False: None,
            redact=lambda *args: None,
            redacts=iter,
            indexes=(IndexSpec("note", lambda obj, **options: [(obj.spec.note,)]), IndexSpec("builtin", iter)),
        )
    )
    assert registry.kind("Gizmo").decl.redacts is iter


# 4. The command and query services are two services.


def test_one_service_as_both_command_and_query_service_is_refused() -> None:
    """Served with its query rpcs alone: ``stigmer apply`` said the kind had no 'apply' rpc."""
    message = _refusal(lambda: attrs.evolve(GIZMO, command_service=GIZMO.query_service))
    assert message.startswith(
        "plugin 'acme': kind 'Gizmo': command_service and query_service are both "
        "tests.gizmo.v1.GizmoQueryController: command_service must be the kind's command service"
    ), message


# 5. Access levels in any case; anything else names the field and the levels.


def test_access_levels_are_read_in_any_case() -> None:
    """``access={"create": "ADMIN"}`` stopped startup with "'ADMIN' is not a valid Access"."""
    clone = attrs.evolve(GIZMO.operations["clone"], access="RUN")
    registry = _build(
        lambda: attrs.evolve(GIZMO, access={"create": "ADMIN", "get": "Write"}, operations={"clone": clone})
    )
    kind = registry.kind("Gizmo")
    methods = {binding.operation: binding.access for binding in kind.methods.values()}
    assert methods["create"] is Access.ADMIN and methods["get"] is Access.WRITE and methods["clone"] is Access.RUN
    assert CustomOperation(steps=(), access="Read").access is Access.READ


def test_an_unknown_access_level_is_refused_naming_the_field_and_the_levels() -> None:
    message = _refusal(lambda: attrs.evolve(GIZMO, access={"create": "ADMN"}))
    assert message == (
        "plugin 'acme': stigmer_kinds raised ValueError: kind 'Gizmo': access['create'] must be an Access "
        "(Access.READ, Access.WRITE, Access.RUN or Access.ADMIN) or its value, in any case ('read', 'write', "
        f"'run', 'admin'), not 'ADMN' (at {_here(_ADMN)})"
    )
    message = _refusal(lambda: attrs.evolve(GIZMO, access={"delete": 3}))  # type: ignore[dict-item]
    assert message.endswith("kind 'Gizmo': access['delete'] must be an Access (Access.READ, Access.WRITE, "
                             "Access.RUN or Access.ADMIN) or its value, in any case ('read', 'write', 'run', 'admin'), "
                             f"not 3 (at {_here(_THREE)})")  # fmt: skip
    with pytest.raises(ValueError, match=r"^CustomOperation\.access must be an Access .*'admin'\), not 'REED'$"):
        CustomOperation(steps=(), access="REED")


# 6. An operation is bound with a CustomOperation.


def test_an_operation_that_is_not_a_custom_operation_is_refused() -> None:
    """A bare tuple of steps stopped startup with "cannot be compiled: AttributeError: 'tuple' object
    has no attribute 'steps'", naming no operation."""
    message = _refusal(lambda: attrs.evolve(GIZMO, operations={"clone": (standard.validate,)}))  # type: ignore[dict-item]
    assert message == (
        "plugin 'acme': stigmer_kinds raised TypeError: kind 'Gizmo': operations['clone'] must be a "
        f"CustomOperation(steps=(...), writes=..., access=...), not tuple (at {_here(_CLONE)})"
    )


# 7. A plural or alias is one word the CLI can take.


@pytest.mark.parametrize(
    "alias", ["giz mo", "Giz/Mo", "giz.mo", "giz=mo", "-giz", "giz-", "9giz", "", "gizmö", "g" * 64]
)
def test_an_alias_that_is_not_one_word_is_refused(alias: str) -> None:
    message = _refusal(lambda: attrs.evolve(GIZMO, aliases=("gz", alias)))
    assert message == (
        f"plugin 'acme': kind 'Gizmo': aliases[1] {alias!r} must be an ASCII letter followed by letters, digits "
        "and dashes, not ending with a dash, 63 at most (like mcp or agent-instances): the CLI takes it as one "
        "word of a command line and documents may give it as their kind"
    )


def test_a_plural_that_is_not_one_word_is_refused() -> None:
    message = _refusal(lambda: attrs.evolve(GIZMO, plural="giz mos"))
    assert message.startswith("plugin 'acme': kind 'Gizmo': plural 'giz mos' must be an ASCII letter"), message


def test_aliases_of_letters_digits_and_dashes_are_served() -> None:
    registry = _build(lambda: attrs.evolve(GIZMO, plural="gizmo-things", aliases=("gz", "giz-mo", "G2", "g" * 63)))
    assert registry.find("giz-mo") is registry.find("gizmo-things") is registry.kind("Gizmo")


def test_a_check_before_the_transaction_on_create_and_update_but_not_apply_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Apply inherits only create's and update's transactional steps: a validation declared for both
    but not for apply passed over whatever `stigmer apply` and import wrote, unseen."""
    check = FunctionStep("no_bad_names", Phase.VALIDATE, lambda ctx: None)
    with caplog.at_level("WARNING"):
        _build(lambda: attrs.evolve(GIZMO, steps={"create": (check,), "update": (check,)}))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        len(said) == 1 and "step 'no_bad_names' (phase VALIDATE) runs on create and update but not on apply" in said[0]
    )
    assert "plugin 'acme'" in said[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        _build(lambda: attrs.evolve(GIZMO, steps={"create": (check,), "update": (check,), "apply": (check,)}))
        _build(lambda: attrs.evolve(GIZMO, steps={"create": (check,)}))  # on create only: a choice
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
