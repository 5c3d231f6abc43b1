"""Compiled kinds: what the controller consults per request.

Everything here is computed once at startup from the declarations (message
classes, field shapes, index key functions, ordered pipelines), so a request
pays only for its own work.
"""

from __future__ import annotations

import logging
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.auth.access import Access
from stigmer_core.errors import FieldViolation, InvalidArgument, PluginFault, RegistryError
from stigmer_core.kinds.declaration import IndexSpec, KindDeclaration, Reference
from stigmer_core.kinds.nesting import NESTING
from stigmer_core.kinds.releases import Release
from stigmer_core.limits import Limits
from stigmer_core.pipeline.step import FunctionStep, Step
from stigmer_core.store import keys

log = logging.getLogger(__name__)

LABEL_INDEX = "_label"


def _fields(desc: Descriptor) -> Mapping[str, FieldDescriptor]:
    return desc.fields_by_name


def _is_message(field: FieldDescriptor | None, name: str | None = None) -> bool:
    if field is None or field.message_type is None:
        return False
    return name is None or field.message_type.name == name


_INTEGERS_64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_") and isinstance(value, int)
}


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and _is_repeated(field) and bool(entry.GetOptions().map_entry)


def _type_of(field: FieldDescriptor) -> str:
    """A field's type as a .proto file spells it (``repeated string``, ``map<string, int32>``)."""
    entry = field.message_type
    if entry is not None and _is_map(field):
        key, value = (_type_of(entry.fields_by_name[n]) for n in ("key", "value"))
        return f"map<{key}, {value}>"
    if entry is not None:
        single = f"message {entry.full_name}"
    elif field.enum_type is not None:
        single = f"enum {field.enum_type.full_name}"
    else:
        single = _SCALARS.get(field.type, f"type {field.type}")
    return f"repeated {single}" if _is_repeated(field) else single


def _is_string(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_STRING and not _is_repeated(field)


def _is_singular_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not _is_repeated(field)


def _is_string_map(field: FieldDescriptor) -> bool:
    if field.message_type is None or not _is_map(field):
        return False
    entry = field.message_type.fields_by_name
    return _is_string(entry["key"]) and _is_string(entry["value"])


def _is_strings(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_STRING and _is_repeated(field)


def _is_timestamp(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and not _is_repeated(field) and message.full_name == "google.protobuf.Timestamp"


def _is_integer_64(field: FieldDescriptor) -> bool:
    return field.type in _INTEGERS_64 and not _is_repeated(field)


def _is_owner_references(field: FieldDescriptor) -> bool:
    if not _is_repeated(field) or _is_map(field) or field.message_type is None:
        return False
    owner = field.message_type.fields_by_name
    return all(name in owner and _is_string(owner[name]) for name in ("kind", "id"))


_Rule = tuple[Callable[[FieldDescriptor], bool], str]
_STRING: _Rule = (_is_string, "string")
_MESSAGE: _Rule = (_is_singular_message, "a singular message")
_STRING_MAP: _Rule = (_is_string_map, "map<string, string>")
_TIMESTAMP: _Rule = (_is_timestamp, "google.protobuf.Timestamp")

_ENVELOPE: dict[str, _Rule] = {"api_version": _STRING, "kind": _STRING, "metadata": _MESSAGE}
"""The resource's own fields the framework writes or reads by name, with the type each needs
(checked when the field is there; the first three must be)."""
_OPTIONAL: dict[str, _Rule] = {"spec": _MESSAGE, "status": _MESSAGE}
_METADATA: dict[str, _Rule] = {
    "name": _STRING,
    "slug": _STRING,
    "id": _STRING,
    "org": _STRING,
    "labels": _STRING_MAP,
    "tags": (_is_strings, "repeated string"),
    "annotations": _STRING_MAP,
    "resource_version": (_is_integer_64, "a 64-bit integer (int64)"),
    "owner_references": (
        _is_owner_references,
        "repeated stigmer.commons.apiresource.v1.OwnerReference (a message with string 'kind' and 'id')",
    ),
}
"""``metadata``'s: what ``ApiResourceMetadata`` has (any message with these fields will do)."""


def _wrong_types(fields: Mapping[str, FieldDescriptor], rules: Mapping[str, _Rule], prefix: str = "") -> list[str]:
    return [
        f"{prefix}{name} is {_type_of(fields[name])}; it must be {required}"
        for name, (holds, required) in rules.items()
        if name in fields and not holds(fields[name])
    ]


@attrs.frozen
class ResourceShape:
    """Which optional envelope fields a resource message has (by field name)."""

    has_spec: bool
    has_status: bool
    has_timestamps: bool
    has_resource_version: bool
    has_owner_refs: bool
    has_annotations: bool
    has_audit: bool
    has_version: bool = False
    """``metadata.version``: a content version, which only a kind's versioning steps set."""

    @classmethod
    def of(cls, kind: str, desc: Any) -> ResourceShape:
        """The shape of ``desc``, or a ``RegistryError`` naming the kind and every envelope field
        that is missing or of another type than the framework writes into it.

        Fields are found by name (docs/plugins.md, Resource shape), so a ``kind`` declared
        int64, a repeated ``metadata``, a ``metadata.name`` of int32 or ``labels`` as a repeated
        string would pass a check of names alone; the kind would start and every create would
        fail INTERNAL when the framework stamps the field. Types are checked here, at startup.
        """
        fields = _fields(desc)
        missing = [f for f in ("api_version", "kind", "metadata") if f not in fields]
        meta_field = fields.get("metadata")
        meta = _fields(meta_field.message_type) if meta_field is not None and meta_field.message_type else {}
        missing += [f"metadata.{f}" for f in ("name", "slug", "id", "org", "labels", "tags") if meta and f not in meta]
        wrong = _wrong_types(fields, {**_ENVELOPE, **_OPTIONAL})
        if meta_field is not None and _is_singular_message(meta_field):
            wrong += _wrong_types(meta, _METADATA, "metadata.")
            if "created_at" in meta and "updated_at" in meta:  # stamped only when both are there
                wrong += _wrong_types(meta, {"created_at": _TIMESTAMP, "updated_at": _TIMESTAMP}, "metadata.")
        problems = []
        if missing:
            problems.append(f"lacks {', '.join(missing)}")
        if wrong:
            problems.append(f"has fields of the wrong type: {', and '.join(wrong)}")
        if problems:
            raise RegistryError(f"kind {kind!r}: resource {desc.full_name} {' and '.join(problems)}")
        status = fields.get("status")
        status_fields = _fields(status.message_type) if status is not None and status.message_type else {}
        return cls(
            has_spec=_is_message(fields.get("spec")),
            has_status=status is not None,
            has_timestamps="created_at" in meta and "updated_at" in meta,
            has_resource_version="resource_version" in meta,
            has_owner_refs="owner_references" in meta,
            has_annotations="annotations" in meta,
            has_audit=_is_message(status_fields.get("audit"), "ApiResourceAudit"),
            has_version=_is_message(meta.get("version")),
        )


@attrs.frozen
class ListShape:
    has_org: bool
    has_labels: bool


def _is_repeated(field: Any) -> bool:
    # protobuf 7 removed FieldDescriptor.label; 6.x has both.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


@attrs.frozen
class FieldPath:
    """A dotted field path resolved against a descriptor at startup."""

    path: str
    repeated: bool
    enum_names: Mapping[int, str] | None = None

    def read(self, message: Message) -> list[str]:
        """The non-empty string values at the path (enum values by name; a number the
        enum does not define, which proto3 lets a client send, by its number)."""
        value: Any = message
        for part in self.path.split("."):
            value = getattr(value, part)
        items = list(value) if self.repeated else [value]
        if self.enum_names is not None:
            names = self.enum_names
            return [names.get(v) or str(v) for v in items if v]
        return [v for v in items if v]

    @classmethod
    def resolve(cls, desc: Any, path: str) -> FieldPath:
        field = None
        for part in path.split("."):
            if desc is None or part not in desc.fields_by_name:
                raise KeyError(path)
            field = desc.fields_by_name[part]
            desc = field.message_type
        assert field is not None
        repeated = _is_repeated(field)
        if field.enum_type is not None:
            return cls(path, repeated, {v.number: v.name for v in field.enum_type.values})
        if field.type != FieldDescriptor.TYPE_STRING:
            raise TypeError(f"{path} is neither a string nor an enum field")
        return cls(path, repeated)


@attrs.frozen
class CompiledReference:
    spec: Reference
    field: FieldPath


@attrs.frozen
class ListFilter:
    """A list-request field served by a declared index."""

    field: FieldPath
    index: IndexSpec


def _callables(steps: tuple[Step, ...]) -> tuple[Callable[[Any], None], ...]:
    # A FunctionStep's function is called directly: one Python call per step, not two.
    return tuple(s.fn if isinstance(s, FunctionStep) else s for s in steps)


@attrs.frozen
class Pipeline:
    """Steps split at the transaction boundary, and the callables that run them."""

    pre: tuple[Step, ...]
    txn: tuple[Step, ...]
    writes: bool
    pre_plugins: tuple[str, ...] = ()
    """The plugin that contributed each step of ``pre`` (the kind's, or the one whose
    ``stigmer_pipeline_steps`` added it): who a step's fault is told of."""
    txn_plugins: tuple[str, ...] = ()
    run_pre: tuple[Callable[[Any], None], ...] = attrs.field(init=False)
    run_txn: tuple[Callable[[Any], None], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "run_pre", _callables(self.pre))
        object.__setattr__(self, "run_txn", _callables(self.txn))


@attrs.frozen
class MethodBinding:
    path: str
    operation: str
    pipeline: Pipeline
    request_cls: type[Message]
    response_cls: type[Message]
    server_streaming: bool
    access: Access = Access.READ
    """What the caller's role must allow (the framework's AUTHORIZE phase enforces it)."""


def _label(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


@attrs.define(slots=True, eq=False)
class KindRuntime:
    """One kind, compiled."""

    decl: KindDeclaration
    plugin: str
    shape: ResourceShape
    list_shape: ListShape
    list_cls: type[Message]
    resource_field: str | None = None
    references: tuple[CompiledReference, ...] = ()
    list_filters: tuple[ListFilter, ...] = ()
    unread_list_fields: tuple[str, ...] = ()
    """Fields of the ``list`` request nothing reads (no list filter declares them, and the
    kind's list runs only the standard steps): a list that sets one is refused, where it was
    answered unfiltered (a filter whose index a release removed, left in the request)."""
    entries_tag: bytes = b"\x0a"
    """Wire tag of the list message's ``entries`` field, for pages built from stored bytes."""
    reference_kinds: frozenset[int] | None = None
    """When references name kinds by a closed enum (the published API's
    ``ApiResourceKind``): the values that name this kind. None: by string."""
    pipelines: dict[str, Pipeline] = attrs.field(factory=dict)
    watch: Pipeline | None = None
    """The generic ``watch`` stream's pipeline (``stigmer.commons.watch.v1.Watch``), apart
    from ``pipelines`` because a kind may bind an rpc of its own named ``watch``."""
    watch_access: Access = Access.READ
    """What a caller's role must allow to watch the kind: its ``list`` access unless declared."""
    read_access: Access = Access.READ
    """What a caller's role must allow to read one of the kind's objects (its ``get``): what
    naming one elsewhere asks, as an owner reference or in a refusal, so a reference cannot
    probe for objects the caller may not read."""
    delete_access: Access = Access.WRITE
    """What a caller's role must allow to delete one of the kind's objects, by its own
    delete or in a cascade from an owner's (which is bound to the owner's access)."""
    methods: dict[str, MethodBinding] = attrs.field(factory=dict)
    release: Release | None = None
    """The plugin release serving the kind; None when no distribution ships the plugin (kinds/releases.py)."""
    record: bytes = b""
    """The ``m/kinds/<name>`` record this daemon reconciled the store to: a write finding another
    (a daemon of another release reconciled since) is refused. Empty: not checked."""
    label: str = attrs.field(init=False)
    """How messages name the kind: ``agent instance``."""
    a_label: str = attrs.field(init=False)
    """The label with its article, for "must be an agent id": ``an agent``, ``a skill``."""
    object_range: bytes = attrs.field(init=False)
    """``keys.object_prefix`` of the kind, encoded once: every object key starts with it."""
    slug_range: bytes = attrs.field(init=False)
    """``keys.slug_range`` of the kind: every slug index key starts with it."""
    _index_ranges: dict[str, bytes] = attrs.field(init=False)
    """``keys.index_range`` of the label index and of every declared index."""
    record_key: bytes = attrs.field(init=False)
    """``keys.kind_record_key`` of the kind: the key every write's release check reads."""
    can_nest: bool = attrs.field(init=False)
    """Whether the kind's objects can contain themselves (a Struct, a recursive message): only
    then is a write's depth checked."""

    def __attrs_post_init__(self) -> None:
        # Key prefixes are fixed by the declaration: encoded here once, not per write.
        prefix = self.decl.key_prefix
        self.label = _label(self.decl.name)
        self.a_label = f"{'an' if self.label[:1] in 'aeiou' else 'a'} {self.label}"
        self.object_range = keys.object_prefix(prefix)
        self.slug_range = keys.slug_range(prefix)
        names = (LABEL_INDEX, *(index.name for index in self.decl.indexes))
        self._index_ranges = {name: keys.index_range(prefix, name) for name in names}
        self.record_key = keys.kind_record_key(self.decl.name)
        self.can_nest = bool(NESTING.plan(self.decl.resource.DESCRIPTOR))

    @property
    def name(self) -> str:
        return self.decl.name

    def object_key(self, object_id: str) -> bytes:
        """``keys.object_key`` of one of this kind's objects."""
        return self.object_range + object_id.encode()

    def slug_key(self, org: str, slug: str) -> bytes:
        """``keys.slug_key`` of one of this kind's slugs."""
        return b"".join((self.slug_range, org.encode(), b"/", slug.encode()))

    @property
    def key_prefix(self) -> str:
        return self.decl.key_prefix

    @property
    def id_prefix(self) -> str:
        return self.decl.id_prefix

    @property
    def api_version(self) -> str:
        return self.decl.api_version

    @property
    def resource_cls(self) -> type[Message]:
        return self.decl.resource

    @property
    def type_url(self) -> str:
        """How a ``google.protobuf.Any`` names the resource message (watch events carry one)."""
        return "type.googleapis.com/" + self.decl.resource.DESCRIPTOR.full_name

    @property
    def redact(self) -> Callable[[Message], None] | None:
        return self.decl.redact

    def hides(self, obj: Message) -> bool:
        """Whether ``obj`` must be redacted before it leaves the server (or enters the event log)."""
        decl = self.decl
        return decl.redact is not None and (decl.redacts is None or decl.redacts(obj))

    @property
    def indexes(self) -> tuple[IndexSpec, ...]:
        return self.decl.indexes

    def parse(self, raw: bytes) -> Message:
        return self.decl.resource.FromString(raw)

    def resource_in(self, request: Message) -> Message | None:
        """The resource a create/apply/update request carries."""
        if type(request) is self.decl.resource:
            return request
        if self.resource_field is not None:
            found: Message = getattr(request, self.resource_field)
            return found
        return None

    def index_keys(self, obj: Message, *, checked: bool = False) -> list[bytes]:
        """``keys.index_key`` of every label and declared index entry of ``obj``.

        Spelled out rather than calling ``keys.index_key`` per entry: every
        write builds these, and the ranges and the org and id are encoded once.
        ``checked``: refuse an entry past ``keys.MAX_KEY_BYTES`` (what a write stores; an object
        stored before, on an engine that took it, is still updated, deleted and reindexed).
        """
        meta: Any = obj.metadata  # type: ignore[attr-defined]
        sep = keys.SEP
        org = meta.org.encode()
        tail = sep + meta.id.encode()
        ranges = self._index_ranges
        found = []
        labels = ranges[LABEL_INDEX]
        for key, value in meta.labels.items():
            pair = b"".join((sep, key.encode(), sep, value.encode(), tail))
            found.append(labels + org + pair)
            found.append(labels + pair)
        for index in self.decl.indexes:
            start = ranges[index.name]
            begun = len(found)
            try:
                for value in index.values(obj):
                    if isinstance(value, str):  # iterable too: it would be indexed one character per value
                        raise self._bad_index_value(index, value)
                    try:
                        encoded = [v.encode() for v in value]
                    except (AttributeError, TypeError):  # a value that is not a string, an entry not a tuple
                        raise self._bad_index_value(index, value) from None
                    if checked and any(sep in part for part in encoded):
                        raise self._holds_separator(index)
                    if index.org_scoped:
                        found.append(start + sep.join([org, *encoded]) + tail)
                        found.append(start + sep.join([b"", *encoded]) + tail)
                    else:
                        found.append(start + sep.join(encoded) + tail)
            except (PluginFault, InvalidArgument):
                raise
            except Exception as exc:  # in the plugin's values function: name it, not the step writing
                raise self._index_failed(index, obj, exc) from exc
            if checked and begun < len(found):
                longest = max(found[begun:], key=len)
                if len(longest) > keys.MAX_KEY_BYTES:
                    raise self._too_long(index, longest)
        return found

    def _holds_separator(self, index: IndexSpec) -> InvalidArgument:
        """An indexed value holding NUL, the separator of an index entry's parts: its entry would
        read as other parts (a tag ending in NUL and another object's id), so it is refused,
        as every validated org, slug, label and id is by its pattern."""
        field = f"(index {index.name})"
        told = (
            f"a value {self.name}'s index {index.name!r} holds has a NUL character, which separates an index "
            "entry's parts: remove it from the field the index reads"
        )
        return InvalidArgument(
            f"{field}: {told}", [FieldViolation(field, told)], metadata={"kind": self.name, "index": index.name}
        )

    def _too_long(self, index: IndexSpec, key: bytes) -> InvalidArgument:
        """An index value the request made longer than a store key may be: the client's to shorten
        (a description a kind indexes whole), said on both engines alike (``keys.MAX_KEY_BYTES``)."""
        field = f"(index {index.name})"
        told = (
            f"a value is too long to be indexed: its entry in {self.name}'s index {index.name!r} would take "
            f"{len(key)} bytes, more than the {keys.MAX_KEY_BYTES} a store key may (shorten the field it comes from)"
        )
        return InvalidArgument(
            f"{field}: {told}",
            [FieldViolation(field, told)],
            reason="INDEX_VALUE_TOO_LONG",
            metadata={"kind": self.name, "index": index.name, "limit": keys.MAX_KEY_BYTES},
        )

    def index_values(self, index: IndexSpec, obj: Message) -> list[tuple[str, ...]]:
        """``index.values(obj)``, a failure in it named as ``index_keys`` names one."""
        try:
            return list(index.values(obj))
        except Exception as exc:
            raise self._index_failed(index, obj, exc) from exc

    def _index_failed(self, index: IndexSpec, obj: Message, exc: Exception) -> PluginFault:
        where = f"plugin {self.plugin!r}: kind {self.name!r}: index {index.name!r}"
        object_id = obj.metadata.id or "(new)"  # type: ignore[attr-defined]
        log.error(
            "%s: values raised %s: %s (object %s)", where, type(exc).__name__, exc, object_id, exc_info=exc
        )
        return PluginFault(f"{where}: values raised {type(exc).__name__}")

    def _bad_index_value(self, index: IndexSpec, value: object) -> PluginFault:
        shown = reprlib.repr(value)
        if isinstance(value, str):
            what = f"the string {shown} as an entry; return [({shown},)], not [{shown}]"
        else:
            what = f"the entry {shown}"
        fault = PluginFault(
            f"plugin {self.plugin!r}: kind {self.name!r}: index {index.name!r}: values returned {what} "
            "(each entry must be a tuple of strings)"
        )
        log.error("%s", fault.message)
        return fault

    def reference_keys(self, obj: Message) -> dict[bytes, bytes]:
        """Reverse-reference entries (target -> this object), valued with the field."""
        if not self.references:
            return {}
        object_id = obj.metadata.id  # type: ignore[attr-defined]
        return {
            keys.referrer_key(target, self.decl.key_prefix, object_id): ref.spec.field.encode()
            for ref in self.references
            for target in ref.field.read(obj)
        }

    def owner_keys(self, obj: Message) -> Iterable[bytes]:
        if not self.shape.has_owner_refs:
            return ()
        refs = obj.metadata.owner_references  # type: ignore[attr-defined]
        if not refs:
            return ()
        object_id = obj.metadata.id  # type: ignore[attr-defined]
        return [keys.owned_key(ref.id, self.decl.key_prefix, object_id) for ref in refs]


@attrs.define(eq=False)
class Registry:
    """Every kind served, looked up by name (any case, plural or alias)."""

    kinds: tuple[KindRuntime, ...]
    default_org: str = "local"
    extensions: dict[str, Any] = attrs.field(factory=dict)
    """Per-application state plugins set up in ``stigmer_configure``."""
    limits: Limits = attrs.field(factory=Limits.from_env)
    """What one request may store and write (stigmer_core.limits)."""
    _by_name: dict[str, KindRuntime] = attrs.field(factory=dict, init=False)
    _by_key_prefix: dict[str, KindRuntime] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        for kind in self.kinds:
            names = {kind.name, kind.decl.plural, *kind.decl.aliases, kind.name + "s"}
            for alias in names:
                if alias:
                    self._by_name.setdefault(alias.lower(), kind)
            self._by_key_prefix[kind.key_prefix] = kind
            NESTING.plan(kind.resource_cls.DESCRIPTOR)  # which fields can nest: decided now, not per write

    def find(self, name: str) -> KindRuntime | None:
        return self._by_name.get(name.lower())

    def kind(self, name: str) -> KindRuntime:
        found = self.find(name)
        if found is None:
            known = ", ".join(sorted(k.name for k in self.kinds))
            raise KeyError(f"unknown kind {name!r} (served: {known})")
        return found

    def by_key_prefix(self, key_prefix: str) -> KindRuntime:
        return self._by_key_prefix[key_prefix]

    def find_key_prefix(self, key_prefix: str) -> KindRuntime | None:
        """The kind stored under ``key_prefix``; None when no installed plugin serves it."""
        return self._by_key_prefix.get(key_prefix)
