"""What ``get``, ``list`` and ``kinds`` print: a table, YAML or JSON.

Tables are plain aligned text (headers bold on a terminal only), so they
read the same in a pipe; YAML and JSON are the full resources in their JSON
mapping, keys sorted, so output is stable between runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from google.protobuf.message import Message

from stigmer_core.cli.catalog import KindInfo
from stigmer_core.cli.envelope import descriptor, has_status, metadata
from stigmer_core.kinds.declaration import PrinterColumn

NONE = "<none>"



def to_dict(obj: Message) -> Any:
    """The JSON-shaped form of a message; the documents module (json_format) loads on first use,
    so `stigmer kinds` and `--help` do not pay for it."""
    from stigmer_core.cli.documents import to_dict as convert

    return convert(obj)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    head = click.style(line(headers), bold=True)
    return "\n".join([head, *(line(r) for r in rows)])


def age(created: Any, now: datetime | None = None) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``, ``2y``: how long ago, roughly."""
    if created is None or not created.seconds:
        return NONE
    now = now or datetime.now(UTC)
    seconds = max(0, int(now.timestamp()) - created.seconds)
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit in "yd" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def status_header(kind: KindInfo) -> str:
    return (kind.status_field or "status").replace("_", " ").upper()


def status_value(kind: KindInfo, obj: Any) -> str:
    if kind.status_field is None or not has_status(obj):
        return NONE
    status = descriptor(obj).fields_by_name["status"].message_type
    shown = to_dict(obj.status).get(status.fields_by_name[kind.status_field].json_name)
    if shown in (None, "", []):
        return NONE
    return ",".join(map(str, shown)) if isinstance(shown, list) else str(shown)


def column_value(column: PrinterColumn, obj: Any, now: datetime | None = None) -> str:
    """A declared column's value: enums by name, repeated values joined, dates as ages."""
    value: Any = obj
    field: Any = None
    for part in column.path.split("."):
        field = value.DESCRIPTOR.fields_by_name[part]
        value = getattr(value, part)
    if column.type == "date":
        return age(value, now)
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf 6 has no is_repeated on every build
        repeated = field.label == field.LABEL_REPEATED
    values: list[Any] = list(value) if repeated else [value]
    if field.enum_type is not None:
        names = field.enum_type.values_by_number
        values = [names[v].name if v in names else str(v) for v in values if v]
    elif field.message_type is not None:
        values = [json.dumps(to_dict(v), sort_keys=True) for v in values]
    shown = ",".join("true" if v is True else "false" if v is False else str(v) for v in values)
    return shown or NONE


def _version(obj: Message) -> Any:
    """The content version an object of a versioned kind shows (a skill's), else None."""
    meta = metadata(obj)
    if "version" not in meta.DESCRIPTOR.fields_by_name or not meta.HasField("version"):
        return None
    return meta.version if meta.version.id else None


def _with_versions(headers: list[str], rows: list[list[str]], objects: Sequence[Message]) -> None:
    """VERSION and TAG columns when any object has a content version: the rows of a version list
    (``call skill listVersions``) are one object at several versions, and differ only there."""
    versions = [_version(obj) for obj in objects]
    if not any(versions):
        return
    headers += ["VERSION", "TAG"]
    for row, version in zip(rows, versions, strict=True):
        row += [version.id[:12], version.tag or NONE] if version is not None else [NONE, NONE]


def resource_table(kind: KindInfo, objects: Sequence[Message], *, with_org: bool = False) -> str:
    headers = [*(["ORG"] if with_org else []), "NAME", "ID", "AGE"]
    if kind.columns:
        now = datetime.now(UTC)
        headers += [c.name.upper() for c in kind.columns]
        rows = []
        for obj in objects:
            meta = metadata(obj)
            created = meta.created_at if "created_at" in meta.DESCRIPTOR.fields_by_name else None
            row = [*([meta.org] if with_org else []), meta.slug, meta.id, age(created, now)]
            rows.append(row + [column_value(c, obj, now) for c in kind.columns])
        _with_versions(headers, rows, objects)
        return table(headers, rows)
    show_status = kind.status_field is not None  # a status of messages alone (an audit): no column of <none>
    if show_status:
        headers.append(status_header(kind))
    rows = []
    now = datetime.now(UTC)
    for obj in objects:
        meta = metadata(obj)
        created = meta.created_at if "created_at" in meta.DESCRIPTOR.fields_by_name else None
        row = [*([meta.org] if with_org else []), meta.slug, meta.id, age(created, now)]
        if show_status:
            row.append(status_value(kind, obj))
        rows.append(row)
    _with_versions(headers, rows, objects)
    return table(headers, rows)


def as_yaml(objects: Sequence[Message]) -> str:
    from stigmer_core.cli import yamlio  # here: PyYAML took a seventh of a `stigmer kinds` that prints a table

    docs = [to_dict(o) for o in objects]
    if len(docs) == 1:
        return yamlio.dump(docs[0]).rstrip("\n")
    return yamlio.dump_all(docs).rstrip("\n")


def as_json(objects: Sequence[Message], *, single: bool) -> str:
    data: Any = to_dict(objects[0]) if single else [to_dict(o) for o in objects]
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def resources(kind: KindInfo, objects: Sequence[Message], fmt: str, *, single: bool, with_org: bool = False) -> str:
    if fmt == "yaml":
        return as_yaml(objects) if objects else ""
    if fmt == "json":
        return as_json(objects, single=single)
    if not objects:
        return ""
    return resource_table(kind, objects, with_org=with_org)
