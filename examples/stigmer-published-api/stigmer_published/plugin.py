"""The plugin module the ``stigmer.kinds`` entry point names."""

from __future__ import annotations

from stigmer_core import KindDeclaration, hookimpl

from stigmer_published.agent import AGENT
from stigmer_published.session import SESSION


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [AGENT, SESSION]
