"""A kind from outside the project, shipped the way a third-party package would.

Its protobuf types are built here at import time (a real package would ship
generated code) and it registers through the ``stigmer.kinds`` entry-point
group; the CLI tests put it on the path of the commands they run and expect
every command to work for it with no CLI change.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stigmer_core import KindDeclaration, hookimpl
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

F = descriptor_pb2.FieldDescriptorProto
COMMONS = "stigmer.commons.apiresource.v1"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="thirdparty/note/v1/note.proto",
        package="thirdparty.note.v1",
        syntax="proto3",
        dependency=[metadata_pb2.DESCRIPTOR.name],
    )

    def message(name: str, *fields: tuple[str, int, int, str, bool]) -> None:
        added = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, repeated in fields:
            field = added.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = type_name

    message(
        "Note",
        ("api_version", 1, F.TYPE_STRING, "", False),
        ("kind", 2, F.TYPE_STRING, "", False),
        ("metadata", 3, F.TYPE_MESSAGE, f".{COMMONS}.ApiResourceMetadata", False),
        ("spec", 4, F.TYPE_MESSAGE, ".thirdparty.note.v1.NoteSpec", False),
        ("status", 5, F.TYPE_MESSAGE, ".thirdparty.note.v1.NoteStatus", False),
    )
    message("NoteSpec", ("text", 1, F.TYPE_STRING, "", False))
    message("NoteStatus", ("phase", 1, F.TYPE_STRING, "", False))
    message("NoteId", ("value", 1, F.TYPE_STRING, "", False))
    message(
        "ListNotesRequest",
        ("org", 1, F.TYPE_STRING, "", False),
        ("page_size", 2, F.TYPE_INT32, "", False),
        ("page_token", 3, F.TYPE_STRING, "", False),
    )
    message(
        "NoteList",
        ("entries", 1, F.TYPE_MESSAGE, ".thirdparty.note.v1.Note", True),
        ("next_page_token", 2, F.TYPE_STRING, "", False),
    )
    note = ".thirdparty.note.v1.Note"
    commands = proto.service.add(name="NoteCommandController")
    for name in ("create", "apply", "update"):
        commands.method.add(name=name, input_type=note, output_type=note)
    commands.method.add(name="delete", input_type=".thirdparty.note.v1.NoteId", output_type=note)
    queries = proto.service.add(name="NoteQueryController")
    queries.method.add(name="get", input_type=".thirdparty.note.v1.NoteId", output_type=note)
    queries.method.add(name="getByReference", input_type=f".{COMMONS}.ApiResourceReference", output_type=note)
    queries.method.add(
        name="list", input_type=".thirdparty.note.v1.ListNotesRequest", output_type=".thirdparty.note.v1.NoteList"
    )
    return proto


descriptor_pool.Default().Add(_file())
FILE = descriptor_pool.Default().FindFileByName("thirdparty/note/v1/note.proto")
Note = message_factory.GetMessageClass(FILE.message_types_by_name["Note"])

NOTE = KindDeclaration(
    name="Note",
    resource=Note,
    command_service=FILE.services_by_name["NoteCommandController"],
    query_service=FILE.services_by_name["NoteQueryController"],
    id_prefix="note",
    key_prefix="notes",
    plural="notes",
    aliases=("nt",),
    description="A short text, from a third-party package.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [NOTE]
