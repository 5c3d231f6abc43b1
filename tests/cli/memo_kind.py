"""A third-party kind whose services have no ``apply`` and no ``getByReference``: it can be
created, read, listed and exported, but not applied or imported."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stigmer_core import KindDeclaration, hookimpl
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

F = descriptor_pb2.FieldDescriptorProto
PKG = "thirdparty.memo.v1"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="thirdparty/memo/v1/memo.proto", package=PKG, syntax="proto3", dependency=[metadata_pb2.DESCRIPTOR.name]
    )
    string, message = F.TYPE_STRING, F.TYPE_MESSAGE
    for name, fields in (
        ("Memo", [("api_version", string, ""), ("kind", string, ""),
                  ("metadata", message, ".stigmer.commons.apiresource.v1.ApiResourceMetadata"),
                  ("spec", message, f".{PKG}.MemoSpec")]),
        ("MemoSpec", [("text", string, "")]),
        ("MemoId", [("value", string, "")]),
        ("ListMemosRequest", [("org", string, ""), ("page_size", F.TYPE_INT32, ""), ("page_token", string, "")]),
        ("MemoList", [("entries", message, f".{PKG}.Memo"), ("next_page_token", string, "")]),
    ):  # fmt: skip
        added = proto.message_type.add(name=name)
        for number, (field_name, kind, type_name) in enumerate(fields, start=1):
            repeated = field_name == "entries"
            field = added.field.add(
                name=field_name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            )
            if type_name:
                field.type_name = type_name
    memo = f".{PKG}.Memo"
    commands = proto.service.add(name="MemoCommandController")
    commands.method.add(name="create", input_type=memo, output_type=memo)
    commands.method.add(name="delete", input_type=f".{PKG}.MemoId", output_type=memo)
    queries = proto.service.add(name="MemoQueryController")
    queries.method.add(name="get", input_type=f".{PKG}.MemoId", output_type=memo)
    queries.method.add(name="list", input_type=f".{PKG}.ListMemosRequest", output_type=f".{PKG}.MemoList")
    return proto


descriptor_pool.Default().Add(_file())
FILE = descriptor_pool.Default().FindFileByName("thirdparty/memo/v1/memo.proto")

MEMO = KindDeclaration(
    name="Memo",
    resource=message_factory.GetMessageClass(FILE.message_types_by_name["Memo"]),
    command_service=FILE.services_by_name["MemoCommandController"],
    query_service=FILE.services_by_name["MemoQueryController"],
    id_prefix="memo",
    key_prefix="memos",
    plural="memos",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [MEMO]
