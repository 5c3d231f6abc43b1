"""How the command line counts things in its sentences: ``1 object``, ``2 objects``."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and ``noun``, the noun plural unless the count is one (``plural`` when the plural
    is not the noun with an ``s``)."""
    return f"{count:,} {noun if count == 1 else (plural or noun + 's')}"
