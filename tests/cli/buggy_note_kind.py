"""``note_kind`` with a step that breaks on create, as a plugin with a bug would."""

from __future__ import annotations

from typing import Any

import attrs

from stigmer_core import KindDeclaration, hookimpl, step

from .note_kind import NOTE


@step
def normalize(ctx: Any) -> None:
    _ = {}["region"]


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [attrs.evolve(NOTE, steps={"create": (normalize,)})]
