"""Reading and deleting: ``get``, ``list``, ``delete``, ``kinds``."""

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
from stigmer_core.cli.options import common_options
from stigmer_core.cli.session import Session
from stigmer_core.pipeline.watch import WATCH_PATH

output_option = click.option(
    "-o", "--output", type=click.Choice(render.FORMATS), default="table", show_default=True, help="Output format."
)
all_orgs_option = click.option("-A", "--all-orgs", is_flag=True, help="Every org, not just --org.")


def _labels(selectors: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for selector in selectors:
        key, sep, value = selector.partition("=")
        if not sep or not key:
            raise CliError(f"invalid label selector '{selector}': use key=value")
        labels[key] = value
    return labels


def _show_list(
    session: Session,
    kind: KindInfo,
    output: str,
    *,
    all_orgs: bool,
    labels: dict[str, str] | None = None,
    limit: int = 0,
) -> None:
    org = "" if all_orgs else session.org
    found = list(session.calls(kind).iterate(org=org, labels=labels, limit=limit))
    if not found and output == "table":
        where = "any org" if all_orgs else f"org '{session.org}'"
        click.echo(f"no {kind.plural} found in {where}", err=True)
        return
    text = render.resources(kind, found, output, single=False, with_org=all_orgs)
    if text:
        click.echo(text)


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


def _watch(session: Session, kind: KindInfo, output: str, *, all_orgs: bool, only: Message | None) -> None:
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


@click.command()
@click.argument("kind_name", metavar="KIND")
@click.argument("name", metavar="[NAME|ID]", required=False)
@output_option
@all_orgs_option
@click.option(
    "-w", "--watch", is_flag=True, help="After the objects, print one line per change (type, name, revision) until Ctrl-C."
)
@common_options
@click.pass_context
def get(ctx: click.Context, kind_name: str, name: str | None, output: str, all_orgs: bool, watch: bool) -> None:
    """Show one object of KIND by slug or id, or every object of KIND in the org.

    KIND is any name of a kind: singular, plural or short (`stigmer kinds`).
    """
    session = Session.of(ctx)
    kind = session.kind(kind_name)
    if watch:
        only = None if name is None else session.calls(kind).require(session.org, name)
        _watch(session, kind, output, all_orgs=all_orgs, only=only)
        return
    if name is None:
        _show_list(session, kind, output, all_orgs=all_orgs)
        return
    obj = session.calls(kind).require(session.org, name)
    click.echo(render.resources(kind, [obj], output, single=True))


@click.command("list")
@click.argument("kind_name", metavar="KIND")
@click.option(
    "-l",
    "--selector",
    "selectors",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only objects with this label (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many objects (0: all).")
@output_option
@all_orgs_option
@common_options
@click.pass_context
def list_(
    ctx: click.Context, kind_name: str, selectors: tuple[str, ...], limit: int, output: str, all_orgs: bool
) -> None:
    """List the objects of KIND in the org, optionally filtered by labels."""
    labels = _labels(selectors)
    session = Session.of(ctx)
    _show_list(session, session.kind(kind_name), output, all_orgs=all_orgs, labels=labels, limit=limit)


@click.command()
@click.argument("kind_name", metavar="KIND")
@click.argument("name", metavar="NAME|ID")
@common_options
@click.pass_context
def delete(ctx: click.Context, kind_name: str, name: str) -> None:
    """Delete one object of KIND by slug or id (and whatever it owns)."""
    session = Session.of(ctx)
    kind = session.kind(kind_name)
    calls = session.calls(kind)
    found = calls.require(session.org, name)
    meta = metadata(found)
    calls.delete(meta.id)
    click.echo(f"{kind.cli_name}/{meta.slug} deleted")


@click.command()
@output_option
@common_options
@click.pass_context
def kinds(ctx: click.Context, output: str) -> None:
    """List every kind served, with the names it answers to and its services."""
    catalog = Session.of(ctx).catalog
    entries = [
        {
            "name": k.name,
            "names": list(k.names),
            "commandService": k.command_service,
            "queryService": k.query_service,
            "description": k.description,
        }
        for k in catalog.kinds
    ]
    if output == "json":
        click.echo(json.dumps(entries, indent=2))
    elif output == "yaml":
        click.echo(yamlio.dump(entries, sort_keys=False).rstrip("\n"))
    else:
        rows = [
            [k.name, ",".join(k.names[1:]), k.command_service or render.NONE, k.query_service] for k in catalog.kinds
        ]
        click.echo(render.table(["KIND", "OTHER NAMES", "COMMAND SERVICE", "QUERY SERVICE"], rows))
