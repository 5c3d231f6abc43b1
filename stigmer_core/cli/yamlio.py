"""YAML in and out, with the PyYAML defaults the CLI cannot live with.

Loading keeps timestamps as strings: PyYAML would turn an unquoted
``2025-01-01T00:00:00Z`` into a ``datetime``, which protobuf's JSON mapping
then refuses. It refuses a key given twice in one mapping, which PyYAML
would settle silently by keeping the last (a second ``spec:`` dropped the
first), as kubectl refuses it. Dumping sorts keys and uses block style for
multi-line text, so the same objects always produce the same bytes (export
relies on it) and instructions stay readable; text holding a character YAML
reads as a line break (NEL, U+2028, U+2029) is double-quoted, where it is
escaped, since written raw it would come back as a newline.

An alias (``*name``) loads as the very object its anchor made, so a few
hundred bytes of aliases naming aliases stand for billions of items, which
checking and converting a document walk one by one ("billion laughs": 600
bytes took 48 s and 1.8 GB before any error). Loading refuses a document
whose aliases make it hold more items or text than given, measured on its
nodes before anything is built from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import yaml  # type: ignore[import-untyped, unused-ignore]

YamlError = yaml.YAMLError
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


# libyaml's parser and emitter when PyYAML was built with it (its wheels are): the same
# documents, the same bytes, six times faster than the pure-Python ones on an export.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


_MERGE = "tag:yaml.org,2002:merge"


class Expands(Exception):
    """A document its aliases make larger than the bounds ``load_all`` was given; the message says how."""


@attrs.frozen
class Bounds:
    items: int
    """List elements and mapping entries, every alias expanded."""
    text: int
    """Characters of scalars (keys too), every alias expanded."""
    items_named: str = ""
    text_named: str = ""
    """What the refusal says after each number: where it comes from."""


def _check_expansion(root: Any, bounds: Bounds) -> None:
    """Refuse ``root`` if its aliases take it past ``bounds``. An alias is the node its anchor
    names, so each node's expanded size is counted once and reused (linear in the nodes, however
    much they expand to), without recursion (a deep document is libyaml's to refuse). What the
    document holds written out is not refused here: it cost its bytes to send, and the server
    holds a request to its own limits."""
    sizes: dict[int, tuple[int, int]] = {}  # by id(node): items and text, aliases expanded
    inside: set[int] = set()  # the nodes being counted: the path from the root
    written_items = written_text = 0  # each node counted once, as the document writes it
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        key = id(node)
        if children is not None:  # its children are counted
            inside.discard(key)
            items, text = len(node.value), 0
            for child in children:
                child_items, child_text = sizes[id(child)]
                items += child_items
                text += child_text
            sizes[key] = (items, text)
            written_items += len(node.value)
        elif key in sizes:  # an alias of a node counted already
            continue
        elif type(node) is yaml.ScalarNode:
            sizes[key] = (0, len(node.value))
            written_text += len(node.value)
        elif key in inside:
            raise Expands("a YAML alias stands inside the node its anchor names (&a [*a]), so it expands without end")
        else:
            inside.add(key)
            children = [part for pair in node.value for part in pair] if type(node) is yaml.MappingNode else node.value
            stack.append((node, children))
            stack.extend((child, None) for child in children)
    items, text = sizes[id(root)]
    if items > max(bounds.items, written_items):
        raise Expands(
            f"its YAML aliases expand it to {items:,} items (list elements and mapping entries), "
            f"more than {bounds.items:,}{bounds.items_named}"
        )
    if text > max(bounds.text, written_text):
        raise Expands(
            f"its YAML aliases expand it to {text:,} characters of text, more than {bounds.text:,}{bounds.text_named}"
        )


class _Loader(_BaseLoader):  # type: ignore[misc, unused-ignore]
    bounds: Bounds | None = None
    text = ""

    def construct_document(self, node: Any) -> Any:
        # Only a document whose text holds an alias (``*``) can expand: most hold none, and skip the walk.
        if self.bounds is not None and "*" in self.text[node.start_mark.index : node.end_mark.index]:
            _check_expansion(node, self.bounds)
        return super().construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, str] = {}  # key -> how it was written first
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # ``<<: *base``: what it merges in, the mapping's own keys override
                continue
            key = self.construct_object(key_node, deep=deep)
            written = key_node.value if isinstance(key_node.value, str) else repr(key)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader names it below
                continue
            if first is not None:
                # ``true`` and ``1``, ``1`` and ``1.0``: two keys as written, one once read (and one
                # would replace the other's value without a word)
                apart = (
                    ""
                    if first == written
                    else f" (written '{first}' and '{written}', which YAML reads as one key: quote them to keep them apart)"
                )
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice{apart}",
                    key_node.start_mark,
                )
            seen[key] = written
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# A number with an exponent and no dot (``1e+300``, ``5e-324``: JSON's, and `stigmer get -o json`'s)
# is a float, as JSON and YAML 1.2 read it; YAML 1.1 read it as a string, so a JSON file written
# by `get -o json` and applied back turned such a Struct number into text.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class _Dumper(_BaseDumper):  # type: ignore[misc, unused-ignore]
    pass


_BREAKS_YAML_ADDS = ("\x85", "\u2028", "\u2029")


def _represent_str(dumper: Any, value: str) -> Any:
    if any(ch in value for ch in _BREAKS_YAML_ADDS):
        style: str | None = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load_all(text: str, bounds: Bounds | None = None) -> Iterator[Any]:
    """Every document of a stream, one at a time (a backup's documents are not all held at once as
    Python objects); empty documents come back as None, so indexes match the file. With ``bounds``,
    a document its aliases take past them raises ``Expands`` instead."""
    loader = _Loader(text)
    loader.bounds, loader.text = bounds, text
    try:
        while loader.check_data():
            yield loader.get_data()
    finally:
        loader.dispose()


def dump(data: Any, *, sort_keys: bool = True) -> str:
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=sort_keys, default_flow_style=False, allow_unicode=True)
    return text


def dump_all(documents: Iterable[Any]) -> str:
    text: str = yaml.dump_all(
        list(documents),
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        explicit_start=True,
    )
    return text


def describe(error: Any, text: str | None = None) -> str:
    """``line 3, column 7: mapping values are not allowed here``; with the ``text`` read, a tab
    the error points at is named (LibYAML's message does not show it)."""
    mark = getattr(error, "problem_mark", None)
    problem = str(getattr(error, "problem", None) or error)
    if "'\t'" not in problem and _at_tab(mark, text):
        problem += " (a tab: YAML indents with spaces)"
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _at_tab(mark: Any, text: str | None) -> bool:
    """Whether the error's mark points at a tab in ``text``."""
    if mark is None or text is None:
        return False
    lines = text.splitlines()
    line, column = getattr(mark, "line", -1), getattr(mark, "column", -1)
    return 0 <= line < len(lines) and 0 <= column < len(lines[line]) and lines[line][column] == "\t"
