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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

YamlError = yaml.YAMLError
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


# libyaml's parser and emitter when PyYAML was built with it (its wheels are): the same
# documents, the same bytes, six times faster than the pure-Python ones on an export.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_BaseLoader):  # type: ignore[misc, unused-ignore]
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader names it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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


def load_all(text: str) -> Iterator[Any]:
    """Every document of a stream, one at a time (a backup's documents are not all held at once as
    Python objects); empty documents come back as None, so indexes match the file."""
    return yaml.load_all(text, Loader=_Loader)


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


def describe(error: Any) -> str:
    """``line 3, column 7: mapping values are not allowed here``."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
