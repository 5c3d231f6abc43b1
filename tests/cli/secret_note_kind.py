"""``note_kind`` whose ``spec.text`` is a secret, declared with ``SecretFields``."""

from __future__ import annotations

import attrs

from stigmer_core import KindDeclaration, SecretFields, hookimpl

from .note_kind import NOTE

SECRETS = SecretFields("spec.text")


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    keep = {"create": (SECRETS.keep,), "update": (SECRETS.keep,)}
    return [attrs.evolve(NOTE, redact=SECRETS.redact, redacts=SECRETS.redacts, steps=keep)]
