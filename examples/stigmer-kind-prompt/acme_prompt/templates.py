"""Prompt templates: ``{{name}}`` placeholders, parsed and filled.

Kept free of protobuf and of the framework, so the rules a prompt must
follow can be read (and tested) on their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
OPENING = "{{"


class TemplateError(ValueError):
    """A ``{{`` that does not open a well-formed placeholder."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"'{{{{' at offset {offset} does not open a placeholder like '{{{{name}}}}' "
            "(lowercase letters, digits and '_', closed by '}}')"
        )
        self.offset = offset


def placeholders(template: str) -> list[str]:
    """Placeholder names in order of first use; raises TemplateError on a stray ``{{``."""
    found: list[str] = []
    position = 0
    while (start := template.find(OPENING, position)) != -1:
        match = PLACEHOLDER.match(template, start)
        if match is None:
            raise TemplateError(start)
        if match.group(1) not in found:
            found.append(match.group(1))
        position = match.end()
    return found


def fill(template: str, value_of: Callable[[str], str]) -> str:
    """The template with every placeholder replaced by ``value_of(name)``."""
    return PLACEHOLDER.sub(lambda match: value_of(match.group(1)), template)
