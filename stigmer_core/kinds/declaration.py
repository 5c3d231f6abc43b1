"""What a plugin declares about a kind: values only, no behaviour of its own.

A declaration names the protobuf types and services, the key and id
prefixes, and the steps the kind adds to standard operations. The registry
checks it at startup and compiles it into a ``KindRuntime``; nothing in a
declaration is consulted per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from stigmer_core.auth.access import Access
from stigmer_core.pipeline.step import Step

ENTRY_POINT_GROUP = "stigmer.kinds"
"""The entry point group a kind package names its plugin in (``plugins.plugin_manager`` loads it)."""

STANDARD_OPERATIONS = ("create", "apply", "update", "delete", "get", "getByReference", "list")
WRITE_OPERATIONS = frozenset({"create", "apply", "update", "delete"})
WATCH_ACCESS = "watch"
"""The key of ``KindDeclaration.access`` for the kind's events on the generic Watch stream."""


def _tuple(value: Any, field: str, item: str, of: type | None = None) -> tuple[Any, ...]:
    """``value`` as a tuple, refusing one ``item`` where a tuple of them belongs (``(IndexSpec(...))``
    lacks its trailing comma): tuple() said only "'IndexSpec' object is not iterable", and a
    string's characters would pass as names."""
    one = isinstance(value, of) if of is not None else hasattr(value, "name") and not isinstance(value, Iterable)
    if one or isinstance(value, str | bytes):
        example = repr(value) if isinstance(value, str | bytes) else f"{item}(...)"
        raise TypeError(
            f"{field} must be a tuple of {item}, not one {type(value).__name__} (a tuple of one needs its "
            f"trailing comma: ({example},))"
        )
    if not isinstance(value, Iterable):
        raise TypeError(f"{field} must be a tuple of {item}, not {type(value).__name__}")
    found = tuple(value)
    if of is not None:
        for i, element in enumerate(found):
            if not isinstance(element, of):
                raise TypeError(f"{field}[{i}]: {type(element).__name__} given where a tuple of {item} belongs")
    return found


def _typed(kinds: type | tuple[type, ...], what: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kinds) and not (what.endswith("or None") and value is None):
            raise TypeError(f"{type(instance).__name__}.{attribute.name} must be {what}, not {type(value).__name__}")

    return check


def _callable(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be callable or None, not {type(value).__name__}"
        )


def _index_function(index: IndexSpec, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An index has no meaning without its function: ``IndexSpec("x", None)`` passed startup
    and failed every write of the kind with INTERNAL."""
    if not callable(value):
        raise TypeError(
            f"IndexSpec {index.name!r}: values must be a function, values(obj) returning the object's index "
            f"entries (such as lambda obj: [(obj.spec.format,)]), not {type(value).__name__}"
        )


_TEXT = _typed(str, "a str")
_FLAG = _typed(bool, "a bool")
_CODE = _callable
"""Declared values checked for their type where they are declared (attrs names the field): a
number for a name stopped every command with "'int' object has no attribute 'lower'", and a
value for a callable passed startup to fail the first request that called it."""


def _freeze_steps(value: Mapping[str, Sequence[Step]]) -> Mapping[str, tuple[Step, ...]]:
    return MappingProxyType({op: _tuple(steps, f"steps[{op!r}]", "step") for op, steps in value.items()})


def _aliases(value: Iterable[str]) -> tuple[str, ...]:
    return _tuple(value, "aliases", "str", str)


def _former(value: Iterable[str]) -> tuple[str, ...]:
    return _tuple(value, "former_api_versions", "str", str)


def _paths(value: Iterable[str]) -> tuple[str, ...]:
    return _tuple(value, "mutable", "str", str)


def _indexes(value: Iterable[IndexSpec]) -> tuple[IndexSpec, ...]:
    return _tuple(value, "indexes", "IndexSpec", IndexSpec)


def _step_tuple(value: Iterable[Step]) -> tuple[Step, ...]:
    return _tuple(value, "steps", "step")


def _references(value: Iterable[Reference]) -> tuple[Reference, ...]:
    return _tuple(value, "references", "Reference", Reference)


def _freeze_filters(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _freeze_map(value: Mapping[str, CustomOperation]) -> Mapping[str, CustomOperation]:
    return MappingProxyType(dict(value))


def _operations(decl: KindDeclaration, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    """A pipeline given bare (``{"render": (validate, ...)}``) passed this far and stopped the
    registry with "'tuple' object has no attribute 'steps'", naming no operation."""
    for op, bound in value.items():
        if not isinstance(bound, CustomOperation):
            raise TypeError(
                f"kind {decl.name!r}: operations[{op!r}] must be a CustomOperation(steps=(...), writes=..., "
                f"access=...), not {type(bound).__name__}"
            )


_ACCESS_VALUES = ", ".join(repr(level.value) for level in Access)


def _level(value: object) -> object:
    """``value`` as an Access where it names one: a member, or its value in any case (``"ADMIN"``
    reads as plainly as ``"admin"``). What names none is left as it is, for the field's check to
    refuse naming where it was declared."""
    if isinstance(value, str):
        try:
            return Access(value.lower())
        except ValueError:
            return value
    return value


def _not_a_level(where: str, value: object) -> str:
    return (
        f"{where} must be an Access (Access.READ, Access.WRITE, Access.RUN or Access.ADMIN) or its value, "
        f"in any case ({_ACCESS_VALUES}), not {value!r}"
    )


def _access(value: Access | str | None) -> Access | None:
    level = None if value is None else _level(value)
    if level is not None and not isinstance(level, Access):
        raise ValueError(_not_a_level("CustomOperation.access", value))
    return level


def _freeze_access(value: Mapping[str, Access | str]) -> Mapping[str, Access]:
    return MappingProxyType({op: _level(level) for op, level in value.items()})  # type: ignore[misc]


def _access_levels(decl: KindDeclaration, attribute: attrs.Attribute[Any], value: Mapping[str, object]) -> None:
    for op, level in value.items():
        if not isinstance(level, Access):
            raise ValueError(_not_a_level(f"kind {decl.name!r}: access[{op!r}]", level))


def _columns(value: Iterable[PrinterColumn]) -> tuple[PrinterColumn, ...]:
    return _tuple(value, "printer_columns", "PrinterColumn", PrinterColumn)


COLUMN_TYPES = ("string", "integer", "number", "boolean", "date")


def _column_type(column: PrinterColumn, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in COLUMN_TYPES:
        raise ValueError(
            f"printer column {column.name!r}: type {value!r} is not one of {', '.join(map(repr, COLUMN_TYPES))}"
        )


@attrs.frozen
class PrinterColumn:
    """A column ``stigmer get`` shows for a kind (like Kubernetes' additionalPrinterColumns).

    ``path`` is a dotted field path in the resource (``spec.transport``,
    ``status.tool_count``), through singular messages. ``type`` says how the
    value reads: ``string`` (any field but a map; enums by value name,
    repeated values joined with commas), ``integer`` (an integer field),
    ``number`` (an integer or floating-point field), ``boolean`` (a bool
    field), or ``date`` (a singular Timestamp, shown as an age such as
    ``5m``). The registry checks both at startup: ``stigmer get`` reads the
    field as the type says, and could not read a string as a date.
    """

    name: str = attrs.field(validator=_TEXT)
    path: str = attrs.field(validator=_TEXT)
    type: str = attrs.field(default="string", validator=_column_type)


@attrs.frozen
class IndexSpec:
    """A secondary index kept in the same transaction as the object.

    ``values`` returns the index values of one object (a tuple of strings per
    entry; several entries are allowed, e.g. one per tag). Queries scan one
    value's entries in id order, so ``listBy…`` rpcs page without scanning
    the kind.
    """

    name: str = attrs.field(validator=_TEXT)
    values: Callable[[Message], Iterable[tuple[str, ...]]] = attrs.field(validator=_index_function)
    org_scoped: bool = attrs.field(default=True, validator=_FLAG)
    """Entries carry the object's org, so one org's entries are one key range
    (an entry across all orgs is kept too, for org-less queries)."""
    version: int = attrs.field(default=1, validator=_typed(int, "an int"))
    """Raise it when ``values`` changes what it returns for stored objects:
    the index is rebuilt from every stored object at the next start."""


@attrs.frozen
class Reference:
    """A field that holds the id of another kind's object.

    Checked inside the writing transaction: the target must exist (in the
    same org when ``same_org``) when the object is written, and the target
    cannot be deleted while a referrer for which ``live`` is true (every
    referrer, when ``live`` is None) still points at it. The field may be
    a dotted path (``spec.session_id``) to a string or a repeated string.
    """

    field: str = attrs.field(validator=_TEXT)
    kind: str = attrs.field(validator=_TEXT)
    same_org: bool = attrs.field(default=True, validator=_FLAG)
    live: Callable[[Message], bool] | None = attrs.field(default=None, validator=_CODE)


@attrs.frozen
class CustomOperation:
    """Binds a kind-specific rpc method to a pipeline the kind spells out.

    ``steps`` are the whole pipeline (standard steps from
    ``stigmer_core.pipeline.steps`` may be reused); ``writes`` says whether it
    runs in a write transaction. ``access`` is what a caller's role must
    allow in the object's org (``Access.READ``, ``WRITE``, ``RUN`` or
    ``ADMIN``, or its value in any case: ``"read"``); left out, it follows the method's name when that is a
    standard one (``create`` writes, ``subscribe`` reads) and ``writes``
    otherwise. The framework enforces it; the steps hold no authorization code.
    """

    steps: tuple[Step, ...] = attrs.field(converter=_step_tuple)
    writes: bool = attrs.field(default=False, validator=_FLAG)
    access: Access | None = attrs.field(default=None, converter=_access)


@attrs.frozen
class KindDeclaration:
    """One resource kind, as a plugin's ``stigmer_kinds`` hook returns it."""

    name: str = attrs.field(validator=_TEXT)
    resource: type[Message]
    command_service: ServiceDescriptor
    query_service: ServiceDescriptor
    id_prefix: str = attrs.field(validator=_TEXT)
    key_prefix: str = attrs.field(validator=_TEXT)
    steps: Mapping[str, tuple[Step, ...]] = attrs.field(factory=dict, converter=_freeze_steps)
    """Extra steps per standard operation name, placed by their phase."""
    operations: Mapping[str, CustomOperation] = attrs.field(factory=dict, converter=_freeze_map, validator=_operations)
    """Kind-specific rpc method name -> its pipeline."""
    indexes: tuple[IndexSpec, ...] = attrs.field(default=(), converter=_indexes)
    references: tuple[Reference, ...] = attrs.field(default=(), converter=_references)
    list_filters: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_filters)
    """List-request field -> index name: ``list`` scans that index when the
    field is set (an enum by value name; a repeated field: every value)."""
    api_version: str = attrs.field(default="stigmer.ai/v1", validator=_TEXT)
    former_api_versions: tuple[str, ...] = attrs.field(default=(), converter=_former)
    """``api_version`` values this kind had before: objects written then carry one until their
    next write (which stamps ``api_version``), and so do their exports, which import still reads."""
    plural: str = attrs.field(default="", validator=_TEXT)
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_aliases)
    """Other names the CLI accepts (short forms): one word each, letters, digits and dashes."""
    description: str = attrs.field(default="", validator=_TEXT)
    exported: bool = attrs.field(default=True, validator=_FLAG)
    """Whether ``stigmer export`` writes this kind. Run-time records (executions,
    their contexts) are not configuration and would not restore as they were."""
    redact: Callable[[Message], None] | None = attrs.field(default=None, validator=_CODE)
    """Blanks secret fields in place before a response leaves the server."""
    redacts: Callable[[Message], bool] | None = attrs.field(default=None, validator=_CODE)
    """Whether an object holds anything ``redact`` would blank. When given, a
    response or event of an object for which it answers False is sent as it is,
    without a redacted copy; it must answer True whenever ``redact`` would
    change the object. Left out, every object is redacted."""
    access: Mapping[str, Access] = attrs.field(factory=dict, converter=_freeze_access, validator=_access_levels)
    """Standard operation name -> the access it needs, where that is not the
    framework's default (reads READ, writes WRITE); e.g. ADMIN for every
    operation of the API token kind (an ``Access``, or its value in any
    case). ``"watch"`` names the kind's events on
    the generic Watch stream; left out, a watch needs what ``list`` needs,
    since it shows every object a list would, and every later change."""
    printer_columns: tuple[PrinterColumn, ...] = attrs.field(default=(), converter=_columns)
    """Columns ``stigmer get`` shows after NAME, ID and AGE (instead of a guessed status column)."""
    apply_rank: int | None = attrs.field(default=None, validator=_typed(int, "an int or None"))
    """Where ``apply``, ``import`` and ``export`` place the kind when no reference decides (lower first)."""
    export_fill: Callable[[Message, Callable[[str, Message], Message]], Iterable[str] | None] | None = attrs.field(
        default=None, validator=_CODE
    )
    """Puts into a listed object what its exported document needs and a read does not return,
    so that importing the document makes the same object: ``export_fill(obj, call)``, where
    ``call(method, request)`` calls one of the kind's rpcs (a skill fetches its zip with
    ``getArtifact`` into ``spec.artifact``, which its writes take). What it returns are notes
    on what the document cannot carry and an import will not make again: said on stderr, so a
    backup never drops them silently, without failing it."""
    export_history: Callable[[Message, Callable[[str, Message], Message]], list[Any]] | None = attrs.field(
        default=None, validator=_CODE
    )
    """What of an object its current state does not hold and references may name (a skill's
    earlier versions, pinned by tag or hash): ``export_history(obj, call)`` returns it as a list
    of plain values, written as the document's top-level ``history`` (nothing when empty). A
    failure names the object on stderr and the export exits 1."""
    import_history: Callable[[Message, Any, Callable[[str, Message], Message]], int] | None = attrs.field(
        default=None, validator=_CODE
    )
    """The other half of ``export_history``: ``import_history(obj, history, call)`` makes on the
    target, through the kind's rpcs, what ``history`` holds and the target lacks, before
    ``apply``/``import`` applies the document itself; writing nothing when the target has it all,
    so applying the same document again is unchanged. Returns how many writes it made; raises
    InvalidArgument naming the ``history`` field it refuses. Skipped by a dry run."""
    delete_guard: Callable[[Any, Message, frozenset[str]], None] | None = attrs.field(default=None, validator=_CODE)
    """Refuses the delete of one of the kind's objects while something its ``references`` do not
    record still needs it (an index of its own naming the object): ``delete_guard(store, obj,
    inside)`` raises ``FailedPrecondition``. Called in the deleting transaction, before anything
    is deleted, for the object a delete names and for every object of the kind an owner's delete
    would take with it, so a cascade is held as a direct delete is. ``store`` is the
    transaction's ``Resources``; ``inside`` holds the ids of everything the delete removes, which
    hold nothing (an owner naming what it owns)."""
    mutable: tuple[str, ...] = attrs.field(default=(), converter=_paths)
    """Resource paths an update may change (``metadata.labels``, ``spec.subject``),
    for a kind whose update request carries a field mask (``update_mask``, as
    Google's AIP-134 describes) and whose steps honour it: a mask naming
    any other path is refused. Checked against the resource at startup. The
    contract draws its update masks from these paths; empty: the framework's
    update (``metadata.name``, ``labels``, ``tags`` and ``spec``)."""
