"""``stigmer get KIND --watch``: the objects, then one line per change until Ctrl-C.

Kept apart from the command module, which ``stigmer --help`` imports: this one
loads grpc and the watch service's messages, and only ``--watch`` needs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import grpc
from google.protobuf.message import Message

from stigmer_core.api.commons.watch.v1 import watch_pb2
from stigmer_core.cli import render, yamlio
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.documents import to_dict
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError, from_rpc
from stigmer_core.cli.session import Session
from stigmer_core.pipeline.watch import WATCH_PATH

_EVENT_NAMES = {
    watch_pb2.WATCH_EVENT_TYPE_ADDED: "ADDED",
    watch_pb2.WATCH_EVENT_TYPE_MODIFIED: "MODIFIED",
    watch_pb2.WATCH_EVENT_TYPE_DELETED: "DELETED",
}


def _open_watch(session: Session, kind: KindInfo, org: str) -> tuple[Any, int]:
    """Open the kind's watch from now; return the stream and the revision it starts after."""
    call = session.client.channel.unary_stream(
        WATCH_PATH,
        request_serializer=watch_pb2.WatchRequest.SerializeToString,
        response_deserializer=watch_pb2.WatchEvent.FromString,
    )
    stream = call(watch_pb2.WatchRequest(kind=kind.name, org=org))
    try:
        first = next(stream)
    except grpc.RpcError as exc:
        raise from_rpc(exc, session.target) from exc
    return stream, int(first.revision)


def _events(session: Session, stream: Any) -> Iterator[watch_pb2.WatchEvent]:
    try:
        for event in stream:
            if event.type in _EVENT_NAMES:
                yield event
    except grpc.RpcError as exc:
        raise from_rpc(exc, session.target) from exc


def _event_line(kind: KindInfo, event: watch_pb2.WatchEvent, obj: Message, output: str) -> str:
    name = _EVENT_NAMES[event.type]
    if output == "table":
        return f"{name:<9} {metadata(obj).slug:<40} {event.revision}"
    shown = {"type": name, "revision": event.revision, "object": to_dict(obj)}
    if output == "json":
        return json.dumps(shown, sort_keys=True, ensure_ascii=False)
    return "---\n" + yamlio.dump(shown).rstrip("\n")


def watch(session: Session, kind: KindInfo, output: str, *, all_orgs: bool, only: Message | None) -> None:
    """Print the objects, then one line per change until Ctrl-C.

    The watch opens first and the list is read after it, so no change falls
    between the two; a change the list already shows (its revision is not
    newer than the object's resource_version) is not printed again.
    """
    if session.client.in_process:  # this process would see only its own writes
        raise CliError("--watch needs a running daemon: start one with `stigmer local start`")
    org = "" if all_orgs else session.org
    stream, _ = _open_watch(session, kind, org)
    try:
        if only is None:
            listed = list(session.calls(kind).iterate(org=org))
        else:
            listed = [session.calls(kind).require(session.org, metadata(only).id)]
        shown = {metadata(o).id: getattr(metadata(o), "resource_version", 0) for o in listed}
        text = render.resources(kind, listed, output, single=only is not None, with_org=all_orgs)
        if text:
            click.echo(text)
        wanted = metadata(only).id if only is not None else None
        for event in _events(session, stream):
            if (wanted is not None and event.id != wanted) or event.revision <= shown.get(event.id, 0):
                continue
            obj = kind.resource_cls()
            event.object.Unpack(obj)
            click.echo(_event_line(kind, event, obj, output))
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
