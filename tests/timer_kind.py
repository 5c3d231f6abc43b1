"""A kind whose spec holds Durations at every nesting level a request check walks (a field, a
repeated field, a map value, inside a repeated message), built from runtime descriptors like
widget_kind."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, duration_pb2, message_factory

from stigmer_core import KindDeclaration, hookimpl
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2  # noqa: F401  (the pool needs it first)
from tests.runtime_protos import added
from tests.widget_kind import F, _message

FILE = "tests/timer/v1/timer.proto"
PKG = "tests.timer.v1"
META = ".stigmer.commons.apiresource.v1.ApiResourceMetadata"
DURATION = ".google.protobuf.Duration"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE,
        package=PKG,
        syntax="proto3",
        dependency=["stigmer_core/api/commons/apiresource/v1/metadata.proto", duration_pb2.DESCRIPTOR.name],
    )
    _message(file, "Stage", ("name", "string", ""), ("wait", "message", DURATION))
    _message(
        file, "TimerSpec", ("timeout", "message", DURATION), ("backoff", "repeated message", DURATION),
        ("stages", "repeated message", f".{PKG}.Stage"),
    )  # fmt: skip
    spec = file.message_type[-1]
    entry = spec.nested_type.add(name="LimitsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE, type_name=DURATION)
    spec.field.add(
        name="limits", number=4, label=F.LABEL_REPEATED, type=F.TYPE_MESSAGE, type_name=f".{PKG}.TimerSpec.LimitsEntry"
    )
    _message(
        file, "Timer", ("api_version", "string", ""), ("kind", "string", ""), ("metadata", "message", META),
        ("spec", "message", f".{PKG}.TimerSpec"),
    )  # fmt: skip
    _message(file, "TimerId", ("value", "string", ""))
    _message(
        file, "TimerReference", ("org", "string", ""), ("kind", "string", ""), ("slug", "string", ""),
        ("id", "string", ""),
    )  # fmt: skip
    _message(file, "ListTimersRequest", ("org", "string", ""), ("page_size", "int32", ""), ("page_token", "string", ""))
    _message(file, "TimerList", ("entries", "repeated message", f".{PKG}.Timer"), ("next_page_token", "string", ""))
    command = file.service.add(name="TimerCommandController")
    query = file.service.add(name="TimerQueryController")
    timer = f".{PKG}.Timer"
    for service, name, request, response in (
        (command, "create", timer, timer),
        (command, "apply", timer, timer),
        (command, "update", timer, timer),
        (command, "delete", f".{PKG}.TimerId", timer),
        (query, "get", f".{PKG}.TimerId", timer),
        (query, "getByReference", f".{PKG}.TimerReference", timer),
        (query, "list", f".{PKG}.ListTimersRequest", f".{PKG}.TimerList"),
    ):
        service.method.add(name=name, input_type=request, output_type=response)
    return file


DESCRIPTOR = added(FILE, _file)


def message(name: str) -> Any:
    return message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name[name])


TIMER = KindDeclaration(
    name="Timer",
    resource=message("Timer"),
    command_service=DESCRIPTOR.services_by_name["TimerCommandController"],
    query_service=DESCRIPTOR.services_by_name["TimerQueryController"],
    id_prefix="tmr",
    key_prefix="timers",
)


class TimerPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [TIMER]
