"""YAML documents <-> resource messages, through protobuf's JSON mapping.

A document is the resource envelope in its JSON form (``apiVersion``,
``kind``, ``metadata``, ``spec``; proto field names are accepted too). Every
error names where it happened: the file, the document's 1-based index in it,
and the field path in the document's own spelling
(``spec.mcpServers[0].name``), including field paths reported by the server.
"""

from __future__ import annotations

import heapq
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

from stigmer_core import errors, limits
from stigmer_core.cli import yamlio
from stigmer_core.cli.catalog import Catalog, KindInfo
from stigmer_core.cli.envelope import descriptor, metadata, repeated
from stigmer_core.cli.errors import CliError, wording
from stigmer_core.cli.moving import move
from stigmer_core.ids import slugify

STDIN = "-"
STDIN_LABEL = "<stdin>"
HISTORY = "history"
"""A document's top-level key beside the resource (``backup.HISTORY``), handed to its kind's ``import_history``."""
SUFFIXES = (".yaml", ".yml", ".json")
_WRAPPED = re.compile(r"^Failed to parse \w+ field: ")
_INTEGER = re.compile(r"^-?\d+$")


def _is_integer(value: object) -> bool:
    """JSON mapping: a number, or a string of digits (how 64-bit integers are written)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and _INTEGER.match(value) is not None)


# FieldDescriptor.cpp_type -> (what a person should write, check)
_EXPECTED: dict[int, tuple[str, Callable[[object], bool]]] = {
    **dict.fromkeys((1, 2, 3, 4), ("an integer", _is_integer)),  # CPPTYPE_INT32, INT64, UINT32, UINT64
    7: ("true or false", lambda v: isinstance(v, bool)),  # CPPTYPE_BOOL
    9: ("a string", lambda v: isinstance(v, str)),  # CPPTYPE_STRING
}


@attrs.frozen
class Source:
    label: str
    text: str


@attrs.frozen
class Document:
    """One parsed document and where it came from.

    The message is kept serialized (a fifth of its size as a Python object), so an import of a
    whole store does not hold every object parsed at once; ``message`` parses a new copy each time.
    """

    source: str
    index: int
    kind: KindInfo
    raw: bytes
    history: Any = None
    """The document's ``history`` (a skill's earlier versions), as read; None when it has none."""

    @classmethod
    def of(cls, source: str, index: int, kind: KindInfo, message: Message, history: Any = None) -> Document:
        return cls(source, index, kind, message.SerializeToString(), history)

    @property
    def message(self) -> Message:
        return self.kind.resource_cls.FromString(self.raw)

    @property
    def where(self) -> str:
        return f"{self.source}, document {self.index}"

    @property
    def slug(self) -> str:
        meta = metadata(self.message)
        return str(meta.slug or slugify(meta.name) or meta.id)

    @property
    def ref(self) -> str:
        """``agent/support-bot``: how output lines name the object."""
        return f"{self.kind.cli_name}/{self.slug}"


class FieldError(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def read_sources(paths: Sequence[str]) -> list[Source]:
    """Files, ``-`` for stdin, and directories (their YAML and JSON files, sorted)."""
    sources = []
    for given in paths:
        if given == STDIN:
            sources.append(Source(STDIN_LABEL, read_stdin()))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
            if not files:
                raise CliError(f"{given}: the directory holds no .yaml, .yml or .json file")
        else:
            files = [path]
        for file in files:
            sources.append(Source(str(file), read_text(file)))
    return sources


def read_text(file: Path) -> str:
    """A document file's text, or a CliError that names the file and says what is wrong."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{file}: is a directory") from None
    except OSError as exc:
        raise CliError(f"{file}: cannot read: {exc.strerror}") from None
    return _decoded(str(file), data)


def read_stdin() -> str:
    """``read_text`` of stdin. Its bytes, not the text stream Python makes of them: that one keeps
    bytes the locale cannot decode as lone surrogates, which failed at the first write as an
    unexpected error, and leaves CRLF line endings as they are, which a file's text does not."""
    try:
        data = sys.stdin.buffer.read()
    except OSError as exc:
        raise CliError(f"{STDIN_LABEL}: cannot read: {exc.strerror}") from None
    return _decoded(STDIN_LABEL, data)


def _decoded(label: str, data: bytes) -> str:
    """UTF-8 with every line ending made ``\\n``, as Python's text files read (YAML reads the same
    documents either way, but an export's last line is compared as it was written)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{label}: not UTF-8 text (YAML or JSON): {exc.reason} at byte {exc.start}") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _typename(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _as_read(value: object) -> str:
    """A value as YAML wrote what it read (``yes`` and ``on`` read true; ``~`` null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_plain_message(field: Any) -> bool:
    """A nested message walked field by field (well-known types have JSON forms of their own)."""
    return field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf.")


def _innermost(error: json_format.ParseError) -> str:
    text = str(error)
    while _WRAPPED.match(text):
        text = _WRAPPED.sub("", text, count=1)
    text = re.sub(r" at \S+\.*$", "", text.strip())
    return text.rstrip(".") or str(error)


def _check(data: Any, cls: type[Message], path: str) -> None:
    """Walk a document along its message type, so an error names the exact field."""
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a mapping, got {_typename(data)}")
    desc = descriptor(cls)
    fields = {f.json_name: f for f in desc.fields} | {f.name: f for f in desc.fields}
    unknown = [str(key) for key in data if not isinstance(key, str) or key not in fields]
    if len(unknown) > 1:  # every one at once: a document older than a release may have several
        known = ", ".join(f.json_name for f in desc.fields)
        named = ", ".join(_join(path, key) for key in unknown)
        raise FieldError(named, f"unknown fields (fields of {desc.name}: {known})")
    for key, value in data.items():
        where = _join(path, str(key))
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            known = ", ".join(f.json_name for f in desc.fields)
            raise FieldError(where, f"unknown field (fields of {desc.name}: {known})")
        if value is None:
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            if not isinstance(value, dict):
                raise FieldError(where, f"expected a mapping, got {_typename(value)}")
            value_field = field.message_type.fields_by_name["value"]
            key_field = field.message_type.fields_by_name["key"]
            expected = _EXPECTED.get(value_field.cpp_type) if value_field.message_type is None else None
            for k, v in value.items():
                if key_field.cpp_type == 9 and not isinstance(k, str):  # CPPTYPE_STRING: YAML read 1 or true
                    raise FieldError(where, f"keys are strings: {_as_read(k)} is {_typename(k)} (quote it)")
                if _is_plain_message(value_field):
                    _check(v, message_factory.GetMessageClass(value_field.message_type), f"{where}[{k!r}]")
                elif expected is not None and not expected[1](v):  # protobuf's own words name Python's types
                    quote = " (quote it)" if value_field.cpp_type == 9 else ""
                    shown = "" if v is None else f" ({_as_read(v)})"
                    raise FieldError(f"{where}[{k!r}]", f"expected {expected[0]}, got {_typename(v)}{shown}{quote}")
            _scalar(cls, key, value, where)
        elif repeated(field):
            if not isinstance(value, list):
                raise FieldError(where, f"expected a list, got {_typename(value)}")
            for i, item in enumerate(value):
                if _is_plain_message(field):
                    _check(item, message_factory.GetMessageClass(field.message_type), f"{where}[{i}]")
                else:
                    _scalar(cls, key, [item], f"{where}[{i}]")
        elif _is_plain_message(field):
            _check(value, message_factory.GetMessageClass(field.message_type), where)
        else:
            _scalar(cls, key, value, where)


_STRUCTS = frozenset(("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"))
_EXACT = 2**53
"""The largest integer a double (every number of a Struct) holds exactly, with all below it."""


def _exact_numbers(value: Any, where: str) -> None:
    """Refuse an integer a Struct would store as a nearby double: it would change without a word,
    and a second apply would find the changed value equal and say unchanged."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > _EXACT:
        raise FieldError(
            where,
            f"{value} is a larger integer than a Struct's numbers (doubles) hold exactly (2^53); "
            f'quote it ("{value}") to keep it as a string',
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _exact_numbers(v, _join(where, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _exact_numbers(v, f"{where}[{i}]")


def _struct_numbers(field: Any, value: Any, where: str) -> None:
    """``_exact_numbers`` for a field of Struct, Value or ListValue (single, repeated or map values)."""
    element = field.message_type
    is_map = element is not None and element.GetOptions().map_entry
    if is_map:
        element = element.fields_by_name["value"].message_type
    if element is None or element.full_name not in _STRUCTS:
        return
    if is_map and isinstance(value, dict):
        for k, v in value.items():
            _exact_numbers(v, f"{where}[{k!r}]")
    elif repeated(field) and isinstance(value, list):  # called once per item, ``where`` indexed
        for v in value:
            _exact_numbers(v, where)
    else:
        _exact_numbers(value, where)


def _scalar(cls: type[Message], key: str, value: Any, where: str) -> None:
    desc = descriptor(cls)
    field = desc.fields_by_name.get(key) or next(f for f in desc.fields if f.json_name == key)
    _struct_numbers(field, value, where)
    expected = _EXPECTED.get(field.cpp_type)
    if expected is not None:  # protobuf's own messages for these speak of Python types, not YAML
        wanted, accepts = expected
        items = value if repeated(field) and isinstance(value, list) else [value]
        wrong = [v for v in items if not accepts(v)]
        if wrong:
            raise FieldError(where, f"expected {wanted}, got {_typename(wrong[0])} ({wrong[0]!r})")
    try:
        json_format.ParseDict({key: value}, cls())
    except json_format.ParseError as exc:
        said = _innermost(exc)
        if field.enum_type is not None:  # protobuf names the enum's type, never its values
            named = ", ".join(v.name for v in field.enum_type.values)
            said = f"{said} (values of {field.enum_type.name}: {named})"
        raise FieldError(where, said) from None


def to_message(data: Any, cls: type[Message]) -> Message:
    """The message a document stands for; FieldError names the offending field."""
    _check(data, cls, "")
    message = cls()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:  # pragma: no cover - _check found every error it can
        raise FieldError("", _innermost(exc)) from None
    return message


def to_dict(message: Message) -> dict[str, Any]:
    """The message's JSON mapping, with whole numbers written as integers: a Struct holds every
    number as a double, and ``neg: -3`` came back ``-3.0`` in get, export and JSON. Read back,
    either is the same double, so a round trip stays byte-stable."""
    found: dict[str, Any] = _whole(json_format.MessageToDict(message))
    return found


_EXACT = 2**53
"""Past it a double no longer holds every integer: such numbers stay as JSON wrote them."""


def _whole(value: Any) -> Any:
    if type(value) is float:
        if value.is_integer() and abs(value) <= _EXACT and not (value == 0 and math.copysign(1.0, value) < 0):
            return int(value)
        return value
    if type(value) is dict:
        return {key: _whole(item) for key, item in value.items()}
    if type(value) is list:
        return [_whole(item) for item in value]
    return value


def json_path(cls: type[Message], proto_path: str) -> str:
    """A server field path (``spec.agent_id``) in the spelling documents use (``spec.agentId``)."""
    desc = descriptor(cls)
    parts = []
    for part in proto_path.split("."):
        name, bracket, rest = part.partition("[")
        field = desc.fields_by_name.get(name) if desc is not None else None
        if field is None:
            parts.append(part)
            desc = None
            continue
        parts.append(field.json_name + bracket + rest)
        desc = field.message_type
        if desc is not None and desc.GetOptions().map_entry:
            desc = desc.fields_by_name["value"].message_type
    return ".".join(parts)


def field_errors(error: errors.StigmerError, cls: type[Message]) -> str:
    """A server error's message, with its field violations in document spelling."""
    if isinstance(error, errors.InvalidArgument) and error.violations:
        return "; ".join(f"{json_path(cls, v.field)}: {wording(v.description)}" for v in error.violations)
    return wording(error.message)


def load_documents(label: str, text: str) -> Iterator[Any]:
    """The YAML documents of ``text`` as they are read, or a CliError naming ``label`` and where it went wrong.

    A document is held to the items one request may carry and to gRPC's message size with its
    aliases expanded: past them the server would refuse it, but only after the client walked
    it all, which aliases can make take hours and all memory."""
    bounds = yamlio.Bounds(
        items=_max_request_items(),
        items_named=f" ({limits.ENV['max_request_items']}: the most one request may carry)",
        text=limits.MESSAGE_BYTES,
        text_named=" (the most one request may carry)",
    )
    read = 0
    try:
        for document in yamlio.load_all(text, bounds):
            read += 1
            yield document
    except yamlio.YamlError as exc:
        raise CliError(f"{label}: invalid YAML at {yamlio.describe(exc, text)}") from None
    except yamlio.Expands as exc:
        raise CliError(f"{label}, document {read + 1}: {exc}") from None
    except RecursionError:
        raise CliError(f"{label}: nested too deeply to read") from None


def _max_request_items() -> int:
    """The server's ``max_request_items`` as this process's environment sets it (the daemon started
    from it, and in-process stores, read the same variable)."""
    variable = limits.ENV["max_request_items"]
    try:
        return limits.Limits.from_env({variable: os.environ.get(variable, "")}).max_request_items
    except errors.StartupError as exc:
        raise CliError(exc.message) from None


def parse(
    source: Source,
    catalog: Catalog,
    *,
    org: str,
    org_given: bool = False,
    to_org: str = "",
    moved_from: set[str] | None = None,
) -> list[Document]:
    """Every non-empty document of a source; the first bad one stops with its location.

    ``org`` goes to documents that name none. With ``org_given`` (``--org`` on the command
    line) a document naming another org is refused, as kubectl refuses a namespace that
    differs from ``-n``, rather than written where the flag did not say. ``to_org``
    (``import --to-org``) is the org of every document, whatever it names: a move, said so,
    which takes the references naming the document's org along (``moving``); the orgs the
    documents named are added to ``moved_from``."""
    raw = load_documents(source.label, source.text)
    documents = []
    for index, data in enumerate(raw, start=1):
        if data is None:
            continue
        where = f"{source.label}, document {index}"
        if not isinstance(data, dict):
            raise CliError(f"{where}: expected a resource (a mapping with kind, metadata, spec), got {_typename(data)}")
        kind_name = data.get("kind")
        if not kind_name or not isinstance(kind_name, str):
            raise CliError(f"{where}: missing 'kind'")
        try:
            kind = catalog.kind(kind_name)
        except CliError as exc:
            raise CliError(f"{where}: {exc.message}") from None
        for key in ("apiVersion", "api_version"):
            given = data.get(key)
            if (
                given is not None
                and kind.api_version
                and given != kind.api_version
                and given not in kind.former_api_versions
            ):
                raise CliError(f"{where}: {key} {given!r} is not {kind.name}'s (it is {kind.api_version!r})")
        data = {**data, "kind": kind.name}
        history = data.pop(HISTORY, None)
        if history is not None and kind.import_history is None:
            raise CliError(
                f"{where}: history: {kind.name} documents carry no history here "
                "(the plugin that replays it is not installed)"
            )
        try:
            message = to_message(data, kind.resource_cls)
        except FieldError as exc:
            raise CliError(f"{where}: {exc}") from None
        meta = metadata(message)
        if to_org:
            named = move(message, to_org)
            if named and moved_from is not None:
                moved_from.add(named)
        elif not meta.org:
            meta.org = org
        elif org_given and meta.org != org:
            moving = f"; to import it into org '{org}', give --to-org {org} instead" if moved_from is not None else ""
            raise CliError(
                f"{where}: metadata.org is '{meta.org}', not '{org}' as --org says; "
                f"drop --org, or pass --org {meta.org}{moving}"
            )
        documents.append(Document.of(source.label, index, kind, message, history))
    return documents


def parse_all(sources: Iterable[Source], catalog: Catalog, *, org: str, org_given: bool = False) -> list[Document]:
    return [doc for source in sources for doc in parse(source, catalog, org=org, org_given=org_given)]


def in_apply_order(documents: Iterable[Document], catalog: Catalog) -> list[Document]:
    """Dependencies first: kinds by ``Catalog.write_order``, then every object after the
    documents of its owners (an agent owned by another agent whose slug sorts later, or an
    owner of a kind that ranks later), otherwise as given."""
    given = list(documents)
    order = catalog.write_order((d.kind, d.message) for d in given)
    by_kind = sorted(given, key=lambda d: order[d.kind.name])
    return _owners_first(by_kind)


def _owners_first(documents: list[Document]) -> list[Document]:
    """``documents`` with each one after the documents its ``ownerReferences`` name by id,
    keeping their order otherwise; an ownership cycle (which no store can hold) is broken
    at its first document."""
    index_of = {metadata(d.message).id: i for i, d in enumerate(documents) if metadata(d.message).id}
    waits: list[set[int]] = []
    needed_by: list[list[int]] = [[] for _ in documents]
    for i, doc in enumerate(documents):
        owners = {
            index_of[ref.id]
            for ref in getattr(metadata(doc.message), "owner_references", ())
            if ref.id in index_of and index_of[ref.id] != i
        }
        waits.append(owners)
        for owner in owners:
            needed_by[owner].append(i)
    ready = [i for i, owners in enumerate(waits) if not owners]
    heapq.heapify(ready)
    placed: list[Document] = []
    done = [False] * len(documents)
    while len(placed) < len(documents):
        if not ready:  # a cycle: release its first document
            first = next(i for i, d in enumerate(done) if not d)
            waits[first].clear()
            heapq.heappush(ready, first)
        i = heapq.heappop(ready)
        if done[i]:
            continue
        done[i] = True
        placed.append(documents[i])
        for waiting in needed_by[i]:
            waits[waiting].discard(i)
            if not waits[waiting] and not done[waiting]:
                heapq.heappush(ready, waiting)
    return placed
