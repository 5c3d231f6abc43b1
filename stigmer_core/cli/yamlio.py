"""YAML in and out, with the two PyYAML defaults the CLI cannot live with.

Loading keeps timestamps as strings: PyYAML would turn an unquoted
``2025-01-01T00:00:00Z`` into a ``datetime``, which protobuf's JSON mapping
then refuses. Dumping sorts keys and uses block style for multi-line text, so
the same objects always produce the same bytes (export relies on it) and
instructions stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

YamlError = yaml.YAMLError
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Dumper(yaml.SafeDumper):  # type: ignore[misc, unused-ignore]
    pass


def _represent_str(dumper: Any, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load_all(text: str) -> list[Any]:
    """Every document of a stream; empty documents come back as None, so indexes match the file."""
    return list(yaml.load_all(text, Loader=_Loader))


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
