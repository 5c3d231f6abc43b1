"""Kinds whose resource envelope is built field by field at run time, to show what the registry
makes of an envelope field of the wrong type (``tests/test_plugin_startup_faults.py``).

``shaped(variant, resource=..., metadata=...)`` declares a kind ``Shape`` in a proto file and
package of the variant's own, with the standard services; each field is ``(name, type)`` where
the type reads as in a ``.proto`` file: ``string``, ``int64``, ``repeated string``,
``map<string, string>``, ``Timestamp``, ``OwnerReference``, ``ApiResourceMetadata``, ``Meta``
(the variant's own metadata message, made of ``metadata``), ``Spec`` (a message with a string).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, message_factory

from stigmer_core import KindDeclaration
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2  # noqa: F401  (the pool needs it first)
from tests.runtime_protos import added

F = descriptor_pb2.FieldDescriptorProto
COMMON = ".stigmer.commons.apiresource.v1"
SCALARS = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "uint64": F.TYPE_UINT64}
MESSAGES = {
    "Timestamp": ".google.protobuf.Timestamp",
    "OwnerReference": f"{COMMON}.OwnerReference",
    "ApiResourceMetadata": f"{COMMON}.ApiResourceMetadata",
}

GOOD_METADATA: tuple[tuple[str, str], ...] = (
    ("name", "string"),
    ("slug", "string"),
    ("id", "string"),
    ("org", "string"),
    ("labels", "map<string, string>"),
    ("tags", "repeated string"),
)
"""The fields every resource's metadata must have, of the types the framework writes."""

GOOD_RESOURCE: tuple[tuple[str, str], ...] = (
    ("api_version", "string"),
    ("kind", "string"),
    ("metadata", "ApiResourceMetadata"),
    ("spec", "Spec"),
)


def _add(file: Any, message: Any, package: str, fields: Sequence[tuple[str, str]]) -> None:
    for number, (name, kind) in enumerate(fields, start=1):
        field = message.field.add(name=name, number=number, label=F.LABEL_OPTIONAL)
        if kind.startswith("map<"):
            key, value = (part.strip() for part in kind[4:-1].split(","))
            entry = message.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=SCALARS[key])
            entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL, type=SCALARS[value])
            field.label, field.type = F.LABEL_REPEATED, F.TYPE_MESSAGE
            field.type_name = f".{package}.{message.name}.{entry.name}"
            continue
        if kind.startswith("repeated "):
            field.label = F.LABEL_REPEATED
            kind = kind.removeprefix("repeated ")
        if kind in SCALARS:
            field.type = SCALARS[kind]
        else:
            field.type = F.TYPE_MESSAGE
            field.type_name = MESSAGES.get(kind, f".{package}.{kind}")


def shaped(
    variant: str,
    *,
    resource: Sequence[tuple[str, str]] = GOOD_RESOURCE,
    metadata: Sequence[tuple[str, str]] = GOOD_METADATA,
) -> KindDeclaration:
    """The ``Shape`` kind of one variant (a proto file of its own, added to the pool once)."""
    package = f"tests.shapes.{variant}.v1"
    name = f"tests/shapes/{variant}/v1/shape.proto"

    def describe() -> descriptor_pb2.FileDescriptorProto:
        file = descriptor_pb2.FileDescriptorProto(
            name=name,
            package=package,
            syntax="proto3",
            dependency=["stigmer_core/api/commons/apiresource/v1/metadata.proto", "google/protobuf/timestamp.proto"],
        )
        _add(file, file.message_type.add(name="Meta"), package, metadata)
        _add(file, file.message_type.add(name="Spec"), package, [("text", "string")])
        _add(file, file.message_type.add(name="Shape"), package, resource)
        _add(file, file.message_type.add(name="ShapeId"), package, [("value", "string")])
        _add(
            file, file.message_type.add(name="ListShapesRequest"), package,
            [("org", "string"), ("page_size", "int32"), ("page_token", "string")],
        )  # fmt: skip
        _add(
            file, file.message_type.add(name="ShapeList"), package,
            [("entries", "repeated Shape"), ("next_page_token", "string")],
        )  # fmt: skip
        command = file.service.add(name="ShapeCommandController")
        query = file.service.add(name="ShapeQueryController")
        shape, shape_id = f".{package}.Shape", f".{package}.ShapeId"
        for service, method, request, response in (
            (command, "create", shape, shape),
            (command, "apply", shape, shape),
            (command, "update", shape, shape),
            (command, "delete", shape_id, shape),
            (query, "get", shape_id, shape),
            (query, "getByReference", f"{COMMON}.ApiResourceReference", shape),
            (query, "list", f".{package}.ListShapesRequest", f".{package}.ShapeList"),
        ):
            service.method.add(name=method, input_type=request, output_type=response)
        return file

    descriptor = added(name, describe)
    return KindDeclaration(
        name="Shape",
        resource=message_factory.GetMessageClass(descriptor.message_types_by_name["Shape"]),
        command_service=descriptor.services_by_name["ShapeCommandController"],
        query_service=descriptor.services_by_name["ShapeQueryController"],
        id_prefix="shp",
        key_prefix="shapes",
    )
