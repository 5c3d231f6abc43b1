"""``stigmer get KIND --watch``: the objects, then one line per change until Ctrl-C.

Kept apart from the command module, which ``stigmer --help`` imports: this one
loads grpc and the watch service's messages, and only ``--watch`` needs them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import click
import grpc
from google.protobuf.message import Message

from stigmer_core.api.commons.watch.v1 import watch_pb2
from stigmer_core.cli import render, yamlio
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.documents import to_dict
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError, Unreachable, from_rpc
from stigmer_core.cli.session import Session
from stigmer_core.pipeline.watch import WATCH_PATH

_EVENT_NAMES = {
    watch_pb2.WATCH_EVENT_TYPE_ADDED: "ADDED",
    watch_pb2.WATCH_EVENT_TYPE_MODIFIED: "MODIFIED",
    watch_pb2.WATCH_EVENT_TYPE_DELETED: "DELETED",
}


RESUME_SECONDS = 60.0
"""How long a watch waits for its daemon to come back (a restart, an upgrade) before it gives up;
``STIGMER_WATCH_RESUME_SECONDS`` sets another (0: give up at once)."""


def _resume_seconds() -> float:
    import os

    given = os.environ.get("STIGMER_WATCH_RESUME_SECONDS", "")
    if not given:
        return RESUME_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # nan too, which max(0, nan) had turned into "give up at once"
        raise CliError(f"STIGMER_WATCH_RESUME_SECONDS must be a number of seconds (0 or more), not {given!r}")
    return seconds


def _open_watch(
    session: Session,
    kind: KindInfo,
    org: str,
    labels: Mapping[str, str],
    since: tuple[int, int | None] | None = None,
) -> Any:
    """Open the kind's watch: from now, or after ``since`` (a revision, and the position of the
    last event received in it, if that was no bookmark). With ``labels`` the server sends the
    changes of objects holding them, and an object that stops holding them as DELETED."""
    call = session.client.channel.unary_stream(
        WATCH_PATH,
        request_serializer=watch_pb2.WatchRequest.SerializeToString,
        response_deserializer=watch_pb2.WatchEvent.FromString,
    )
    request = watch_pb2.WatchRequest(kind=kind.name, org=org, labels=labels)
    if since is not None:
        request.since_revision = since[0]
        if since[1] is not None:
            request.since_position = since[1]
    return call(request)


def _reason(cut: grpc.RpcError) -> str:
    """Why a watch was cut, without a server's advice to API clients on resuming it (``since_revision``),
    which the command follows itself."""
    return (cut.details() or "").split("; watch again", 1)[0]


class _Follow:
    """The kind's events, in order, across daemon restarts.

    A daemon that stops ends every watch UNAVAILABLE; the watch is opened
    again after the last event (or bookmark) it received, so nothing is
    missed or printed twice, while the daemon comes back within
    ``RESUME_SECONDS``. Each cut and resume is said on stderr.
    """

    def __init__(self, session: Session, kind: KindInfo, org: str, labels: Mapping[str, str]) -> None:
        self._session, self._kind, self._org, self._labels = session, kind, org, labels
        self._patience = _resume_seconds()
        self.stream = _open_watch(session, kind, org, labels)
        first = self._next()
        self.cursor: tuple[int, int | None] = (int(first.revision), None)

    def _next(self) -> watch_pb2.WatchEvent:
        try:
            return next(self.stream)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            raise from_rpc(exc, self._session.target) from exc

    def _reopen(self, cut: grpc.RpcError) -> None:
        import time

        target, revision = self._session.target, self.cursor[0]
        click.echo(f"stigmer: the watch was cut ({_reason(cut)}); watching again after revision {revision}", err=True)
        deadline = time.monotonic() + self._patience
        pause = 0.25
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._given_up(cut) from cut
            try:
                grpc.channel_ready_future(self._session.client.channel).result(timeout=left)
                self.stream = _open_watch(self._session, self._kind, self._org, self._labels, self.cursor)
                next(self.stream)  # its first bookmark: the watch is open again
            except grpc.FutureTimeoutError:
                raise self._given_up(cut) from cut
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:  # a compacted log (ABORTED), a revoked token
                    raise from_rpc(exc, target) from exc
                if not isinstance(from_rpc(exc, target), Unreachable):
                    # up, then ended it again before the watch opened: its newer reason is said. A
                    # connection lost as the server finished stopping keeps the reason it gave.
                    cut = exc
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 2.0)
                continue
            click.echo(f"stigmer: watching again after revision {revision}", err=True)
            return

    def _given_up(self, cut: grpc.RpcError) -> Exception:
        """The watch could not be opened again in time: said for a person at a terminal. A server
        that ended it says, to any client, how to resume through the API (``since_revision``), which
        this command did for as long as it waits; the person can only run it again."""
        error = from_rpc(cut, self._session.target)
        if isinstance(error, Unreachable):  # grpc's words, made the CLI's already
            return error
        return Unreachable(
            f"the stigmer server at {self._session.target} ended the watch ({_reason(cut)}) and did not take it back within "
            f"{self._patience:g} s ($STIGMER_WATCH_RESUME_SECONDS); every change up to revision {self.cursor[0]} "
            "was printed: run the command again",
            details=[cut.details() or ""],
        )

    def __iter__(self) -> Iterator[watch_pb2.WatchEvent]:
        while True:
            try:
                for event in self.stream:
                    if event.type in _EVENT_NAMES:
                        self.cursor = (int(event.revision), int(event.position))
                        yield event
                    else:  # a bookmark: every event up to its revision has been received
                        self.cursor = (int(event.revision), None)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc(exc, self._session.target) from exc
                self._reopen(exc)


def _event_line(
    name: str, revision: int, obj: Message, output: str, *, with_org: bool = False, principal: str = ""
) -> str:
    """One change as printed: a line of the table (with the org, under ``-A``, as the table has
    it), or a JSON line or YAML document with its type, revision, object and who made it (a
    change's, not a listed object's: its audit names its writers)."""
    meta = metadata(obj)
    if output == "table":
        org = f"{meta.org:<20} " if with_org else ""
        return f"{name:<9} {org}{meta.slug:<40} {revision}"
    shown: dict[str, object] = {"type": name, "revision": revision, "object": to_dict(obj)}
    if principal:
        shown["principal"] = principal
    if output == "json":
        return json.dumps(shown, sort_keys=True, ensure_ascii=False)
    return "---\n" + yamlio.dump(shown).rstrip("\n")


def watch(
    session: Session,
    kind: KindInfo,
    output: str,
    *,
    all_orgs: bool,
    only: Message | None,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Print the objects, then one line per change until Ctrl-C, across daemon restarts.

    The watch opens first and the list is read after it, so no change falls
    between the two; a change the list already shows (its revision is not
    newer than the object's resource_version) is not printed again.
    """
    if session.client.in_process:  # this process would see only its own writes
        raise CliError("--watch needs a running daemon: start one with `stigmer local start`")
    org = "" if all_orgs else session.org
    follow = _Follow(session, kind, org, labels or {})
    try:
        if only is None:
            listed = list(session.calls(kind).iterate(org=org, labels=labels or None))
        else:
            listed = [session.calls(kind).require(session.org, metadata(only).id)]
        shown = {metadata(o).id: getattr(metadata(o), "resource_version", 0) for o in listed}
        if output == "table":
            text = render.resources(kind, listed, output, single=only is not None, with_org=all_orgs)
            if text:
                click.echo(text)
        else:  # as the changes are: every line (document) one object, those listed ADDED at their version
            for obj in listed:
                click.echo(_event_line("ADDED", shown[metadata(obj).id], obj, output))
        wanted = metadata(only).id if only is not None else None
        for event in follow:
            if (wanted is not None and event.id != wanted) or event.revision <= shown.get(event.id, 0):
                continue
            obj = kind.resource_cls()
            event.object.Unpack(obj)
            click.echo(
                _event_line(
                    _EVENT_NAMES[event.type], event.revision, obj, output, with_org=all_orgs, principal=event.principal
                )
            )
    except KeyboardInterrupt:
        pass
    finally:
        follow.stream.cancel()
