"""The Gizmo kind with ``spec.note`` secret (``SecretFields``) and custom rpcs that answer its
objects in the ways a plugin may: a step of the RESPOND phase answering the stored object, and
server streams of a plugin's own generator (the objects themselves, pages holding them, bytes).

Built from runtime descriptors over tests/gizmo_kind's messages; its services are its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
from google.protobuf import descriptor_pb2, descriptor_pool

from stigmer_core import CustomOperation, KindDeclaration, SecretFields, hookimpl
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep
from tests import gizmo_kind
from tests.gizmo_kind import GIZMO, message

FILE = "tests/gizmo/v1/gizmo_feed.proto"
PKG = "tests.gizmo.v1"
SECRETS = SecretFields("spec.note")


def _build() -> Any:
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(FILE)
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto(name=FILE, package=PKG, syntax="proto3", dependency=[gizmo_kind.FILE])
    command = file.service.add(name="GizmoFeedCommandController")
    query = file.service.add(name="GizmoFeedQueryController")
    gizmo, gizmo_id = f".{PKG}.Gizmo", f".{PKG}.GizmoId"
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
    ):
        service.method.add(
            name=name, input_type=request, output_type=response, server_streaming=streams
        )  # fmt: skip
    pool.Add(file)
    return pool.FindFileByName(FILE)


DESCRIPTOR = _build()


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


def _read(name: str, phase: Phase, fn: Any) -> CustomOperation:
    return CustomOperation(steps=(standard.validate, standard.authorize, FunctionStep(name, phase, fn)))


FEED_GIZMO = attrs.evolve(
    GIZMO,
    command_service=DESCRIPTOR.services_by_name["GizmoFeedCommandController"],
    query_service=DESCRIPTOR.services_by_name["GizmoFeedQueryController"],
    redact=SECRETS.redact,
    redacts=SECRETS.redacts,
    steps={"create": (SECRETS.keep,), "update": (SECRETS.keep,)},
    operations={
        "peek": _read("peek", Phase.RESPOND, _peek),  # after the REDACT phase
        "follow": _read("follow", Phase.LOAD, _follow),
        "pages": _read("pages", Phase.LOAD, _pages),
    },
)


class FeedPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [FEED_GIZMO]
