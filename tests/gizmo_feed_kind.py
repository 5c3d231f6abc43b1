"""The Gizmo kind with ``spec.note`` secret (``SecretFields``) and rpcs that answer its objects
in the ways a plugin may: a step of the RESPOND phase answering the stored object (on a custom
rpc and on the standard ``get``), server streams of a plugin's own generator (the objects
themselves, pages holding them, bytes) or of a subscription object, and a message of its own
holding them deep (a map, hits holding them, an ``Any``).

Built from runtime descriptors over tests/gizmo_kind's messages; its services are its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
from google.protobuf import any_pb2, descriptor_pb2, message_factory

from stigmer_core import CustomOperation, KindDeclaration, SecretFields, hookimpl
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep
from tests import gizmo_kind
from tests.gizmo_kind import GIZMO, message
from tests.runtime_protos import added

FILE = "tests/gizmo/v1/gizmo_feed.proto"
PKG = "tests.gizmo.v1"
SECRETS = SecretFields("spec.note")


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE, package=PKG, syntax="proto3", dependency=[gizmo_kind.FILE, any_pb2.DESCRIPTOR.name]
    )
    gizmo, gizmo_id = f".{PKG}.Gizmo", f".{PKG}.GizmoId"
    label, one, many = descriptor_pb2.FieldDescriptorProto, 1, 3
    hit = file.message_type.add(name="GizmoHit")
    hit.field.add(name="gizmo", number=1, type=label.TYPE_MESSAGE, type_name=gizmo, label=one)
    hit.field.add(name="score", number=2, type=label.TYPE_FLOAT, label=one)
    shelf = file.message_type.add(name="GizmoShelf")
    entry = shelf.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=label.TYPE_STRING, label=one)
    entry.field.add(name="value", number=2, type=label.TYPE_MESSAGE, type_name=gizmo, label=one)
    shelf.field.add(
        name="by_name", number=1, type=label.TYPE_MESSAGE, type_name=f".{PKG}.GizmoShelf.ByNameEntry", label=many
    )
    shelf.field.add(name="hits", number=2, type=label.TYPE_MESSAGE, type_name=f".{PKG}.GizmoHit", label=many)
    shelf.field.add(name="packed", number=3, type=label.TYPE_MESSAGE, type_name=".google.protobuf.Any", label=one)
    command = file.service.add(name="GizmoFeedCommandController")
    query = file.service.add(name="GizmoFeedQueryController")
    for service, name, request, response, streams in (
        (command, "create", gizmo, gizmo, False),
        (command, "apply", gizmo, gizmo, False),
        (command, "update", gizmo, gizmo, False),
        (command, "delete", gizmo_id, gizmo, False),
        (query, "get", gizmo_id, gizmo, False),
        (query, "getByReference", f".{PKG}.GizmoReference", gizmo, False),
        (query, "list", f".{PKG}.ListGizmosRequest", f".{PKG}.GizmoList", False),
        (query, "peek", gizmo_id, gizmo, False),
        (query, "follow", gizmo_id, gizmo, True),
        (query, "pages", gizmo_id, f".{PKG}.GizmoList", True),
        (query, "shelf", gizmo_id, f".{PKG}.GizmoShelf", False),
        (query, "subscription", gizmo_id, gizmo, True),
    ):
        service.method.add(
            name=name, input_type=request, output_type=response, server_streaming=streams
        )  # fmt: skip
    return file


DESCRIPTOR = added(FILE, _file)


def _peek(ctx: Any) -> None:
    ctx.response = ctx.store.require(ctx.kind, ctx.request.value)


def _follow(ctx: Any) -> None:
    found = ctx.store.require(ctx.kind, ctx.request.value)
    bare = ctx.kind.resource_cls()
    bare.metadata.id = found.metadata.id

    def states() -> Iterator[Any]:
        yield found
        yield found
        yield bare.SerializeToString()  # a step's own bytes: sent as they are

    ctx.response = states()


def _pages(ctx: Any) -> None:
    found = ctx.store.require(ctx.kind, ctx.request.value)
    page = message("GizmoList")
    ctx.response = iter([page(entries=[found, found]), page(entries=[found])])


def _shelf(ctx: Any) -> None:
    found = ctx.store.require(ctx.kind, ctx.request.value)
    shelf: Any = message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name["GizmoShelf"])()
    shelf.by_name["g"].CopyFrom(found)
    shelf.hits.add(gizmo=found, score=1.0)
    shelf.packed.Pack(found)
    ctx.response = shelf


class Subscription:
    """A stream answer that is no generator: an object whose ``__iter__`` is one, with no
    ``close`` of its own. ``ended`` is set once the stream has let go of what it held."""

    ended: ClassVar[dict[str, bool]] = {}

    def __init__(self, ctx: Any, found: Any) -> None:
        self.ctx = ctx  # as a real subscription's would: what it watches, for whom
        self.found = found

    def __iter__(self) -> Iterator[Any]:
        Subscription.ended[self.found.metadata.id] = False
        try:
            while True:
                yield self.found
        finally:
            Subscription.ended[self.found.metadata.id] = True


def _subscription(ctx: Any) -> None:
    ctx.response = Subscription(ctx, ctx.store.require(ctx.kind, ctx.request.value))


def _late_get(ctx: Any) -> None:
    ctx.response = ctx.store.require(ctx.kind, ctx.request.value)


def _read(name: str, phase: Phase, fn: Any) -> CustomOperation:
    return CustomOperation(steps=(standard.validate, standard.authorize, FunctionStep(name, phase, fn)))


FEED_GIZMO = attrs.evolve(
    GIZMO,
    command_service=DESCRIPTOR.services_by_name["GizmoFeedCommandController"],
    query_service=DESCRIPTOR.services_by_name["GizmoFeedQueryController"],
    redact=SECRETS.redact,
    redacts=SECRETS.redacts,
    steps={
        "create": (SECRETS.keep,),
        "update": (SECRETS.keep,),
        "get": (FunctionStep("late_get", Phase.RESPOND, _late_get),),  # a standard rpc's, after REDACT
    },
    operations={
        "peek": _read("peek", Phase.RESPOND, _peek),  # after the REDACT phase
        "follow": _read("follow", Phase.LOAD, _follow),
        "pages": _read("pages", Phase.LOAD, _pages),
        "shelf": _read("shelf", Phase.LOAD, _shelf),
        "subscription": _read("subscription", Phase.LOAD, _subscription),
    },
)


class FeedPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [FEED_GIZMO]
