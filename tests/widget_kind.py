"""A kind declared from runtime-built descriptors, for testing the generic
capabilities (indexes, list filters, listBy, references, watch) without
any generated code: the factory needs nothing but descriptors."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, message_factory

from stigmer_core import CustomOperation, KindDeclaration, hookimpl
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2  # noqa: F401  (the pool needs it first)
from stigmer_core.kinds.declaration import IndexSpec, Reference
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep
from stigmer_core.pipeline.watch import watch_object
from tests.runtime_protos import added

F = descriptor_pb2.FieldDescriptorProto
FILE = "tests/widget/v1/widget.proto"
PKG = "tests.widget.v1"
META = ".stigmer.commons.apiresource.v1.ApiResourceMetadata"
REF = ".stigmer.commons.apiresource.v1.ApiResourceReference"


def _message(file: Any, name: str, *fields: tuple[str, int, str]) -> None:
    msg = file.message_type.add(name=name)
    for number, (field, kind, type_name) in enumerate(fields, start=1):
        label = F.LABEL_REPEATED if kind.startswith("repeated ") else F.LABEL_OPTIONAL
        kind = kind.removeprefix("repeated ")
        proto_type = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "enum": F.TYPE_ENUM}.get(
            kind, F.TYPE_MESSAGE
        )
        added = msg.field.add(name=field, number=number, label=label, type=proto_type)
        if type_name:
            added.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE, package=PKG, syntax="proto3", dependency=["stigmer_core/api/commons/apiresource/v1/metadata.proto"]
    )
    color = file.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "RED", "BLUE"]):
        color.value.add(name=name, number=number)
    _message(
        file,
        "WidgetSpec",
        ("owner_id", "string", ""),
        ("color", "enum", f".{PKG}.Color"),
        ("parts", "repeated string", ""),
    )
    _message(file, "WidgetStatus", ("phase", "string", ""))
    _message(
        file, "Widget", ("api_version", "string", ""), ("kind", "string", ""), ("metadata", "message", META),
        ("spec", "message", f".{PKG}.WidgetSpec"), ("status", "message", f".{PKG}.WidgetStatus"),
    )  # fmt: skip
    _message(file, "WidgetId", ("value", "string", ""))
    _message(
        file, "ListWidgetsRequest", ("org", "string", ""), ("page_size", "int32", ""), ("page_token", "string", ""),
        ("color", "enum", f".{PKG}.Color"),
    )  # fmt: skip
    _message(file, "WidgetList", ("entries", "repeated message", f".{PKG}.Widget"), ("next_page_token", "string", ""))
    _message(
        file, "ListByOwnerRequest", ("owner_id", "string", ""), ("page_size", "int32", ""), ("page_token", "string", "")
    )
    _message(file, "WatchWidgetRequest", ("value", "string", ""), ("after_revision", "int64", ""))
    _message(file, "SetPhaseRequest", ("value", "string", ""), ("phase", "string", ""))
    command = file.service.add(name="WidgetCommandController")
    query = file.service.add(name="WidgetQueryController")
    widget = f".{PKG}.Widget"
    for service, name, request, response, stream in (
        (command, "create", widget, widget, False),
        (command, "apply", widget, widget, False),
        (command, "update", widget, widget, False),
        (command, "delete", f".{PKG}.WidgetId", widget, False),
        (command, "setPhase", f".{PKG}.SetPhaseRequest", widget, False),
        (query, "get", f".{PKG}.WidgetId", widget, False),
        (query, "getByReference", REF, widget, False),
        (query, "list", f".{PKG}.ListWidgetsRequest", f".{PKG}.WidgetList", False),
        (query, "listByOwner", f".{PKG}.ListByOwnerRequest", f".{PKG}.WidgetList", False),
        (query, "watch", f".{PKG}.WatchWidgetRequest", widget, True),
    ):
        service.method.add(name=name, input_type=request, output_type=response, server_streaming=stream)
    return file


DESCRIPTOR = added(FILE, _file)


def message(name: str) -> Any:
    return message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name[name])


def _set_phase(ctx: Any) -> None:
    existing = ctx.store.require(ctx.kind, ctx.request.value)
    updated = ctx.kind.resource_cls()
    updated.CopyFrom(existing)
    updated.status.phase = ctx.request.phase
    ctx.store.replace(ctx.kind, existing, updated)
    ctx.response = updated


def _color_name(widget: Any) -> list[tuple[str, ...]]:
    """An open enum holds numbers it does not name (a fuzzed -1): those are indexed by number."""
    number = widget.spec.color
    named = DESCRIPTOR.enum_types_by_name["Color"].values_by_number.get(number)
    return [(named.name if named is not None else str(number),)] if number else []


WIDGET = KindDeclaration(
    name="Widget",
    resource=message("Widget"),
    command_service=DESCRIPTOR.services_by_name["WidgetCommandController"],
    query_service=DESCRIPTOR.services_by_name["WidgetQueryController"],
    id_prefix="wdg",
    key_prefix="widgets",
    indexes=(
        IndexSpec("owner", lambda w: [(w.spec.owner_id,)] if w.spec.owner_id else [], org_scoped=False),
        IndexSpec("color", _color_name),
    ),
    list_filters={"color": "color"},
    references=(Reference("spec.owner_id", "Agent", live=lambda w: w.status.phase != "DONE"),),
    operations={
        "listByOwner": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.list_by("owner", "owner_id"))
        ),
        "watch": CustomOperation(
            steps=(
                standard.authorize,
                watch_object(after_field="after_revision", until=lambda w: w.status.phase == "DONE", poll=0.2),
            )
        ),
        "setPhase": CustomOperation(
            steps=(standard.authorize, FunctionStep("set_phase", Phase.PERSIST, _set_phase), standard.publish),
            writes=True,
        ),
    },
)


class WidgetPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [WIDGET]
