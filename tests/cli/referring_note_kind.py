"""``note_kind`` whose ``spec.text`` holds an agent's id, declared as a ``Reference``: a kind with a
reference field, for a CLI that has its plugin and one that knows it only from a server."""

from __future__ import annotations

import attrs

from stigmer_core import KindDeclaration, Reference, hookimpl

from .note_kind import NOTE


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [attrs.evolve(NOTE, references=(Reference("spec.text", "Agent"),))]
