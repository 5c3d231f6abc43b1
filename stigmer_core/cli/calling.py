"""What ``stigmer call`` does, loaded only when it runs (``stigmer --help`` imports the command module)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click
import grpc
import yaml  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.cli import render, request_ids, yamlio
from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.documents import (
    STDIN,
    STDIN_LABEL,
    FieldError,
    load_documents,
    read_stdin,
    read_text,
    to_dict,
    to_message,
)
from stigmer_core.cli.envelope import descriptor, repeated
from stigmer_core.cli.errors import CliError, from_rpc
from stigmer_core.cli.session import Session
from stigmer_core.limits import MESSAGE_BYTES


def _set(data: dict[str, Any], assignment: str) -> None:
    path, sep, text = assignment.partition("=")
    if not sep or not path:
        raise CliError(f"invalid --set '{assignment}': use field=value (dotted paths for nested fields)", exit_code=2)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as exc:
        raise CliError(
            f"--set '{assignment}': the value is not valid YAML ({yamlio.describe(exc)}); quote it, or read "
            f"a string or bytes field from a file: --set-file {path}=PATH"
        ) from None
    _place(data, path, value, f"--set '{assignment}'")


def _place(data: dict[str, Any], path: str, value: Any, given: str) -> None:
    target = data
    *parents, leaf = path.split(".")
    for part in parents:
        nested = target.setdefault(part, {})
        if not isinstance(nested, dict):
            raise CliError(f"{given}: {part} is already given a value")
        target = nested
    target[leaf] = value


def _field_at(cls: type[Message], path: str) -> Any:
    """The field a dotted path names (JSON or declared spelling), or None when it names none."""
    desc, field = descriptor(cls), None
    for part in path.split("."):
        if desc is None:
            return None
        field = next((f for f in desc.fields if part in (f.name, f.json_name)), None)
        if field is None:
            return None
        desc = field.message_type
    return field


def _set_file(cls: type[Message], data: dict[str, Any], assignment: str) -> None:
    """A string or bytes field read from a file, which no YAML scalar on a command line carries
    well: a skill's SKILL.md (front matter opens with ``---``, a YAML document marker), its zip."""
    path, sep, name = assignment.partition("=")
    given = f"--set-file '{assignment}'"
    if not sep or not path or not name:
        raise CliError(f"invalid {given}: use field=PATH (dotted paths for nested fields)", exit_code=2)
    field = _field_at(cls, path)
    if field is None:
        raise CliError(f"{given}: request {descriptor(cls).full_name} has no field {path}")
    if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES) or repeated(field):
        raise CliError(f"{given}: --set-file fills a string or bytes field, and {path} is neither: give it with --set")
    file = Path(name)
    try:
        size = file.stat().st_size
        if size > MESSAGE_BYTES:
            raise CliError(f"{given}: {file} holds {size:,} bytes, more than a request may carry ({MESSAGE_BYTES:,})")
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"{given}: cannot read {file}: {exc.strerror}") from None
    if field.type == FieldDescriptor.TYPE_BYTES:
        _place(data, path, base64.b64encode(raw).decode("ascii"), given)
        return
    try:
        _place(data, path, raw.decode("utf-8"), given)
    except UnicodeDecodeError:
        raise CliError(f"{given}: {file} is not UTF-8 text, and {path} is a string field") from None


def build_request(
    cls: type[Message],
    files: tuple[Path, ...],
    assignments: tuple[str, ...],
    *,
    org: str,
    file_assignments: tuple[str, ...] = (),
) -> Message:
    data: dict[str, Any] = {}
    for path in files:
        label, text = (STDIN_LABEL, read_stdin()) if str(path) == STDIN else (str(path), read_text(path))
        loaded = load_documents(label, text)
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise CliError(f"{path}: a request is a mapping of field names to values")
            data.update(doc)
    for assignment in assignments:
        _set(data, assignment)
    for assignment in file_assignments:
        _set_file(cls, data, assignment)
    if "org" in descriptor(cls).fields_by_name and "org" not in data and org:
        data["org"] = org
    try:
        return to_message(data, cls)
    except FieldError as exc:
        raise CliError(f"request {descriptor(cls).full_name}: {exc}") from None


def _show(kind: KindInfo, response: Message, output: str) -> str:
    resource = descriptor(kind.resource_cls).full_name
    fields = descriptor(response).fields_by_name
    if descriptor(response).full_name == resource:
        return render.resources(kind, [response], output, single=True)
    entries = fields.get("entries")
    if entries is not None and entries.message_type is not None and entries.message_type.full_name == resource:
        return render.resources(kind, list(response.entries), output, single=False)  # type: ignore[attr-defined]
    if output == "json":
        return json.dumps(to_dict(response), indent=2, sort_keys=True, ensure_ascii=False)
    return yamlio.dump(to_dict(response)).rstrip("\n")


def _repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 7 dropped ``label``
    return bool(repeated if repeated is not None else field.label == field.LABEL_REPEATED)


def _paged_field(message: Message) -> str | None:
    """The field a page's items are in: a response with a ``next_page_token`` and one repeated
    field (a list's ``entries``, ``listTags``' ``tags``), None for any other response."""
    fields = descriptor(message).fields
    if not any(f.name == "next_page_token" for f in fields):
        return None
    items = [f.name for f in fields if _repeated(f)]
    return items[0] if len(items) == 1 else None


def _all_pages(calls: Any, method_name: str, request: Message, first: Message) -> Message:
    """The first page with the items of every later one: a list answers 100 objects a page, and
    showing only those would pass for the whole answer. A request that names its own page
    (``pageToken``/``pageSize``) gets that page alone, its token told on stderr."""
    requested = descriptor(request).fields_by_name
    items = _paged_field(first)
    if items is None or "page_token" not in requested:
        return first
    chosen = getattr(request, "page_token", "") or ("page_size" in requested and getattr(request, "page_size", 0))
    token = first.next_page_token  # type: ignore[attr-defined]
    if chosen:
        if token:
            click.echo(f"more remain: the next page is --set pageToken={token}", err=True)
        return first
    while token:
        request.page_token = token  # type: ignore[attr-defined]
        page = calls.call(method_name, request)
        getattr(first, items).extend(getattr(page, items))
        token = page.next_page_token
    first.next_page_token = ""  # type: ignore[attr-defined]
    return first


def run(
    ctx: click.Context,
    kind_name: str,
    method_name: str,
    files: tuple[Path, ...],
    assignments: tuple[str, ...],
    output: str,
    timeout: float,
    file_assignments: tuple[str, ...] = (),
) -> None:
    session = Session.of(ctx)
    kind = session.kind(kind_name)
    if method_name not in kind.methods:
        known = ", ".join(sorted(kind.methods))
        raise CliError(f"kind {kind.name} has no rpc '{method_name}' (its rpcs: {known})")
    method = kind.method(method_name)
    request = build_request(method.request_cls, files, assignments, org=session.org, file_assignments=file_assignments)
    request_ids.resolve(session, kind, request)
    calls = session.calls(kind)
    calls.timeout = timeout
    if not method.server_streaming:
        response: Message = _all_pages(calls, method_name, request, calls.call(method_name, request))
        text = _show(kind, response, output)
        if text:
            click.echo(text)
        elif output != "json":  # an empty YAML stream or table: said where a person reads it, stdout kept empty
            click.echo(f"no {kind.plural.lower()} in the answer", err=True)
        return
    stream = session.client.channel.unary_stream(
        method.path,
        request_serializer=method.request_cls.SerializeToString,
        response_deserializer=method.response_cls.FromString,
    )
    try:
        for message in stream(request, timeout=timeout):
            click.echo(_show(kind, message, "yaml" if output == "table" else output))
            if output != "json":
                click.echo("---")
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the stream ran for --timeout: not a failure
            raise from_rpc(exc, session.target) from exc
