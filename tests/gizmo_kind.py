"""A kind whose messages carry message-level (CEL) validation rules, as the
published Stigmer API's do, built from runtime descriptors like widget_kind.

Its ``clone`` rpc writes copies of a gizmo and answers all of them, so its
answer can outgrow the message limit while every object fits its own.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, message_factory

from stigmer_core import CustomOperation, KindDeclaration, hookimpl
from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2  # noqa: F401  (the pool needs it first)
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep
from tests.runtime_protos import added
from tests.widget_kind import _message

FILE = "tests/gizmo/v1/gizmo.proto"
PKG = "tests.gizmo.v1"
META = ".stigmer.commons.apiresource.v1.ApiResourceMetadata"


def _rule(message: Any, rule_id: str, expression: str, text: str) -> None:
    rule = message.options.Extensions[validate_pb2.message].cel.add()
    rule.id, rule.expression, rule.message = rule_id, expression, text


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE,
        package=PKG,
        syntax="proto3",
        dependency=["stigmer_core/api/commons/apiresource/v1/metadata.proto", validate_pb2.DESCRIPTOR.name],
    )
    _message(file, "GizmoSpec", ("low", "int32", ""), ("high", "int32", ""), ("note", "string", ""))
    _rule(file.message_type[-1], "low_not_above_high", "this.low <= this.high", "low must not be above high")
    _message(
        file, "Gizmo", ("api_version", "string", ""), ("kind", "string", ""), ("metadata", "message", META),
        ("spec", "message", f".{PKG}.GizmoSpec"),
    )  # fmt: skip
    _rule(file.message_type[-1], "has_metadata", "has(this.metadata)", "a gizmo needs metadata")
    _message(file, "GizmoId", ("value", "string", ""))
    _message(
        file, "GizmoReference", ("org", "string", ""), ("kind", "string", ""), ("slug", "string", ""),
        ("id", "string", ""),
    )  # fmt: skip
    _rule(file.message_type[-1], "slug_or_id", "this.slug != '' || this.id != ''", "a slug or an id is required")
    _message(file, "ListGizmosRequest", ("org", "string", ""), ("page_size", "int32", ""), ("page_token", "string", ""))
    _message(file, "GizmoList", ("entries", "repeated message", f".{PKG}.Gizmo"), ("next_page_token", "string", ""))
    _message(file, "CloneGizmoRequest", ("value", "string", ""), ("copies", "int32", ""))
    command = file.service.add(name="GizmoCommandController")
    query = file.service.add(name="GizmoQueryController")
    gizmo = f".{PKG}.Gizmo"
    for service, name, request, response in (
        (command, "create", gizmo, gizmo),
        (command, "apply", gizmo, gizmo),
        (command, "update", gizmo, gizmo),
        (command, "delete", f".{PKG}.GizmoId", gizmo),
        (command, "clone", f".{PKG}.CloneGizmoRequest", f".{PKG}.GizmoList"),
        (query, "get", f".{PKG}.GizmoId", gizmo),
        (query, "getByReference", f".{PKG}.GizmoReference", gizmo),
        (query, "list", f".{PKG}.ListGizmosRequest", f".{PKG}.GizmoList"),
    ):
        service.method.add(name=name, input_type=request, output_type=response)
    return file


DESCRIPTOR = added(FILE, _file)


def message(name: str) -> Any:
    return message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name[name])


def _clone(ctx: Any) -> None:
    source = ctx.store.require(ctx.kind, ctx.request.value)
    page = ctx.kind.list_cls()
    for i in range(min(ctx.request.copies, 10)):
        copy = ctx.kind.resource_cls()
        copy.metadata.name = f"{source.metadata.name} {i}"
        copy.spec.CopyFrom(source.spec)
        page.entries.append(ctx.store.create(ctx.kind, copy, org=source.metadata.org, principal=ctx.principal))
    ctx.response = page


GIZMO = KindDeclaration(
    name="Gizmo",
    resource=message("Gizmo"),
    command_service=DESCRIPTOR.services_by_name["GizmoCommandController"],
    query_service=DESCRIPTOR.services_by_name["GizmoQueryController"],
    id_prefix="gzm",
    key_prefix="gizmos",
    operations={
        "clone": CustomOperation(
            steps=(standard.authorize, FunctionStep("clone", Phase.PERSIST, _clone), standard.publish), writes=True
        )
    },
)


class GizmoPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [GIZMO]
