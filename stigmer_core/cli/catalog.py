"""The kinds a backend serves, described the same way wherever they come from.

Locally they come from the plugin registry (the same plugins the daemon
loads); against a remote server they come from gRPC server reflection, which
needs nothing installed on the client. Either way a ``KindInfo`` carries the
message classes and method paths the generic calls need, so no command has
code for any particular kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError, from_rpc
from stigmer_core.cli.ordering import dependency_order, rank_of
from stigmer_core.kinds.declaration import PrinterColumn
from stigmer_core.kinds.runtime import Registry
from stigmer_core.kinds.secret_fields import SecretFields

if TYPE_CHECKING:  # a catalog built from the installed plugins needs no grpc: `stigmer kinds` starts faster
    import grpc

STANDARD_QUERIES = ("get", "getByReference", "list")
STATUS_PREFERENCE = ("phase", "state", "status", "condition", "health")


def _secrets(redact: object) -> SecretFields | None:
    helper = getattr(redact, "__self__", None)
    return helper if isinstance(helper, SecretFields) else None


def _referenced(registry: Registry, decl: Any) -> tuple[str, ...]:
    """Kinds a declaration's ``references`` point at, by canonical name."""
    found = (registry.find(str(getattr(ref, "kind", ""))) for ref in getattr(decl, "references", ()))
    return tuple(dict.fromkeys(kind.name for kind in found if kind is not None))


@attrs.frozen
class Method:
    path: str
    request_cls: type[Message]
    response_cls: type[Message]
    server_streaming: bool = False
    access: str = ""
    """The access level its caller needs (``read``, ``write``, ``run``, ``admin``), when the kind's
    plugin is installed here; empty for a kind known only by reflection."""


def _label(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _misnamed_groups() -> str:
    """A note naming installed packages whose entry points are in a group spelt almost as the
    one kinds are loaded from (``stigmer.kind``, ``stigmer_kinds``): their kinds are never
    loaded, and nothing else says so. Read only when a kind was not found."""
    import difflib
    import importlib.metadata

    from stigmer_core.kinds.declaration import ENTRY_POINT_GROUP

    found = []
    for dist in importlib.metadata.distributions():
        for group in {ep.group for ep in dist.entry_points}:
            if (
                group != ENTRY_POINT_GROUP
                and difflib.SequenceMatcher(None, group.lower(), ENTRY_POINT_GROUP).ratio() > 0.85
            ):
                found.append(f"{dist.metadata['Name']} declares entry points in group '{group}'")
    if not found:
        return ""
    return f"; note: {'; '.join(sorted(found))}, not '{ENTRY_POINT_GROUP}', so its kinds are not loaded"


def _served_plural(query: Any, name: str) -> str:
    """A kind's plural as its list request names it (``ListPantriesRequest``: ``pantries``, as
    `stigmer kind new` writes it from the declared plural), for a kind whose plugin is not
    installed here; ``name`` + s when the request is named otherwise."""
    listed = query.methods_by_name["list"].input_type.name
    match = re.fullmatch(r"List([A-Z]\w*)Request", listed)
    if match and match.group(1).lower().startswith(name.lower()[:-1]):
        return match.group(1).lower()
    return name.lower() + "s"


def _served_aliases(query: Any, name: str) -> tuple[str, ...]:
    """The dashed forms (``agent-instance``), singular and plural; the implied plural (name + s)
    too where the served one differs, so both spellings answer."""
    kebab = _kebab(name)
    found = [kebab, kebab + "s"]
    if _served_plural(query, name) != name.lower() + "s":
        found.append(name.lower() + "s")
    return tuple(dict.fromkeys(found))


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _status_field(resource: Any) -> str | None:
    """The status field a table shows: a conventional one, else the first plain field."""
    status = resource.fields_by_name.get("status")
    if status is None or status.message_type is None:
        return None
    plain = [f for f in status.message_type.fields if f.message_type is None]
    for name in STATUS_PREFERENCE:
        if any(f.name == name for f in plain):
            return name
    return plain[0].name if plain else None


@attrs.frozen(eq=False)
class KindInfo:
    """One served kind: names, services, message classes, method paths (equal only to itself)."""

    name: str
    plural: str
    aliases: tuple[str, ...]
    description: str
    rank: int
    id_prefix: str
    command_service: str
    query_service: str
    resource_cls: type[Message]
    methods: Mapping[str, Method]
    status_field: str | None
    exported: bool = True
    """Whether ``export`` writes the kind (its declaration's ``exported``)."""
    references: tuple[str, ...] = ()
    """Kinds (canonical names) its declaration's ``references`` point at."""
    key_prefix: str = ""
    """Its objects' key prefix in the store (kinds from the local registry only)."""
    columns: tuple[PrinterColumn, ...] = ()
    """Columns its declaration asks ``get`` to show (none: a guessed status column)."""
    reference_fields: tuple[tuple[str, str], ...] = ()
    """(field path, target kind) of its declared references: where documents may give a slug."""
    api_version: str = ""
    """The ``apiVersion`` its objects carry (kinds with a local declaration; "" where unknown)."""
    former_api_versions: tuple[str, ...] = ()
    """Those its objects carried before (its declaration's): documents giving one are read as its."""
    export_fill: Callable[[Message, Callable[[str, Message], Message]], Iterable[str] | None] | None = None
    """Its declaration's ``export_fill``: what an exported document needs that a list does not return."""
    export_history: Callable[[Message, Callable[[str, Message], Message]], list[Any]] | None = None
    """Its declaration's ``export_history``: a document's ``history`` (a skill's earlier versions)."""
    import_history: Callable[[Message, Any, Callable[[str, Message], Message]], int] | None = None
    """Its declaration's ``import_history``: makes what a document's ``history`` holds, before its apply."""
    secrets: SecretFields | None = None
    """Its declaration's ``SecretFields`` (the helper its ``redact`` comes from), if any."""
    declared: bool = True
    """Whether its plugin is installed where the CLI runs: a kind known only by reflection has no
    short names and no reference fields, so the CLI cannot turn slugs in them into ids."""

    @property
    def label(self) -> str:
        """How messages name the kind: ``agent instance``."""
        return _label(self.name)

    @property
    def cli_name(self) -> str:
        return self.name.lower()

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the CLI accepts for the kind."""
        return tuple(dict.fromkeys(n.lower() for n in (self.name, self.plural, self.name + "s", *self.aliases) if n))

    def method(self, name: str) -> Method:
        found = self.methods.get(name)
        if found is None:
            raise CliError(f"kind {self.name} has no '{name}' rpc")
        return found


class Catalog:
    """Kinds by any of their names, case-insensitive."""

    def __init__(self, kinds: Iterable[KindInfo]) -> None:
        given = list(kinds)
        declared = dependency_order({k.name: k.rank for k in given}, {k.name: k.references for k in given})
        self.kinds = tuple(sorted(given, key=lambda k: declared[k.name]))  # as far as declarations tell
        self._by_name: dict[str, KindInfo] = {}
        for kind in self.kinds:
            for name in kind.names:
                self._by_name.setdefault(name, kind)

    def find(self, name: str) -> KindInfo | None:
        return self._by_name.get(name.lower())

    def kind(self, name: str) -> KindInfo:
        found = self.find(name)
        if found is None:
            near = self.closest(name)
            hint = f"did you mean '{near}'? " if near else ""
            known = ", ".join(k.cli_name for k in self.kinds) or "none"
            raise CliError(
                f"unknown kind '{name}' ({hint}known kinds: {known}; `stigmer kinds` lists them){_misnamed_groups()}"
            )
        return found

    def closest(self, name: str) -> str | None:
        """The accepted kind name nearest a mistyped one (``agnets`` -> ``agents``), if any is near."""
        import difflib

        near = difflib.get_close_matches(name.lower(), list(self._by_name), n=1, cutoff=0.7)
        return near[0] if near else None

    def by_name(self, name: str) -> KindInfo | None:
        """The kind whose canonical name is ``name`` (as in ``kind`` fields and owner references)."""
        return next((k for k in self.kinds if k.name == name), None) or self.find(name)

    def write_order(self, objects: Iterable[tuple[KindInfo, Message]]) -> dict[str, int]:
        """Kind name -> position for writing ``objects``: declared references,
        and the owners the objects name, before the kinds that need them."""
        return self.owner_order(
            (kind.name, ref.kind) for kind, obj in objects for ref in getattr(metadata(obj), "owner_references", ())
        )

    def owner_order(self, owned: Iterable[tuple[str, str]]) -> dict[str, int]:
        """``write_order`` from (kind name, the kind an object of it names as its owner) pairs."""
        after: dict[str, set[str]] = {k.name: set(k.references) for k in self.kinds}
        for kind_name, owner_kind in set(owned):
            owner = self.by_name(owner_kind)
            if owner is not None:
                after.setdefault(kind_name, set()).add(owner.name)
        return dependency_order({k.name: k.rank for k in self.kinds}, after)

    @classmethod
    def from_registry(cls, registry: Registry) -> Catalog:
        kinds = []
        for runtime in registry.kinds:
            decl = runtime.decl
            methods = {
                binding.path.rsplit("/", 1)[1]: Method(
                    binding.path,
                    binding.request_cls,
                    binding.response_cls,
                    binding.server_streaming,
                    binding.access.value,
                )
                for binding in runtime.methods.values()
            }
            kinds.append(
                KindInfo(
                    name=decl.name,
                    plural=decl.plural or decl.name + "s",
                    aliases=tuple(decl.aliases),
                    description=decl.description,
                    rank=rank_of(decl.name, decl.apply_rank),
                    id_prefix=decl.id_prefix,
                    command_service=decl.command_service.full_name,
                    query_service=decl.query_service.full_name,
                    resource_cls=decl.resource,
                    methods=methods,
                    status_field=_status_field(decl.resource.DESCRIPTOR),
                    exported=decl.exported,
                    references=_referenced(registry, decl),
                    key_prefix=decl.key_prefix,
                    columns=decl.printer_columns,
                    reference_fields=tuple((ref.field, ref.kind) for ref in decl.references),
                    secrets=_secrets(decl.redact),
                    export_fill=decl.export_fill,
                    export_history=decl.export_history,
                    import_history=decl.import_history,
                    api_version=decl.api_version,
                    former_api_versions=decl.former_api_versions,
                )
            )
        return cls(kinds)

    @classmethod
    def from_reflection(cls, channel: grpc.Channel, target: str, *, known: Catalog | None = None) -> Catalog:
        """Kinds of a server that follows the resource conventions, found by reflection.

        A query service with ``get``/``getByReference``/``list`` names a kind
        after the message ``get`` returns; the command service whose ``apply``
        returns the same message completes it. Reflection carries no short
        names, so a kind whose plugin is also installed here (``known``)
        borrows its plural, aliases, rank, id prefix, references and whether
        it is exported; any other answers to its name, plural and dashed
        forms (``agent-instance``) and is exported.
        """
        import grpc
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        database = ProtoReflectionDescriptorDatabase(channel)
        pool: Any = descriptor_pool.DescriptorPool(database)
        try:
            names = [n for n in database.get_services() if not n.startswith("grpc.")]
            services = [pool.FindServiceByName(n) for n in names]
        except grpc.RpcError as exc:
            raise from_rpc(exc, target) from exc
        queries: dict[str, Any] = {}
        commands: dict[str, Any] = {}
        service: Any
        for service in services:
            by_name = {m.name: m for m in service.methods}
            if all(n in by_name for n in STANDARD_QUERIES):
                queries.setdefault(by_name["get"].output_type.full_name, service)
            elif "apply" in by_name:
                commands.setdefault(by_name["apply"].output_type.full_name, service)
        kinds = []
        # what each method needs, as the plugins installed here declare it
        accesses = {m.path: m.access for k in (known.kinds if known else ()) for m in k.methods.values()}
        for resource_name, query in queries.items():
            command = commands.get(resource_name)
            resource = pool.FindMessageTypeByName(resource_name)
            methods: dict[str, Method] = {}
            for service in (command, query):
                for m in service.methods if service is not None else ():
                    methods.setdefault(
                        m.name,
                        Method(
                            f"/{service.full_name}/{m.name}",
                            message_factory.GetMessageClass(m.input_type),
                            message_factory.GetMessageClass(m.output_type),
                            m.server_streaming,
                            accesses.get(f"/{service.full_name}/{m.name}", ""),
                        ),
                    )
            name = resource.name
            local = (
                next((k for k in known.kinds if k.resource_cls.DESCRIPTOR.full_name == resource_name), None)
                if known
                else None
            )
            kinds.append(
                KindInfo(
                    name=name,
                    plural=local.plural if local else _served_plural(query, name),
                    aliases=local.aliases if local else _served_aliases(query, name),
                    description=local.description if local else "",
                    rank=local.rank if local else rank_of(name),
                    id_prefix=local.id_prefix if local else "",
                    command_service=command.full_name if command is not None else "",
                    query_service=query.full_name,
                    resource_cls=message_factory.GetMessageClass(resource),
                    methods=methods,
                    status_field=_status_field(resource),
                    exported=local.exported if local else True,
                    references=local.references if local else (),
                    columns=local.columns if local else (),
                    reference_fields=local.reference_fields if local else (),
                    export_fill=local.export_fill if local else None,
                    export_history=local.export_history if local else None,
                    import_history=local.import_history if local else None,
                    api_version=local.api_version if local else "",
                    former_api_versions=local.former_api_versions if local else (),
                    declared=local is not None,
                )
            )
        if not kinds:
            raise CliError(f"the stigmer server at {target} serves no resource kinds")
        return cls(kinds)
