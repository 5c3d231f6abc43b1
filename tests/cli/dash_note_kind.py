"""``note_kind`` with an id prefix holding a dash (``acme-note``), as the registry allows."""

from __future__ import annotations

import attrs

from stigmer_core import KindDeclaration, hookimpl

from .note_kind import NOTE


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [attrs.evolve(NOTE, id_prefix="acme-note")]
