"""Reading the resource envelope of any kind's message.

Message classes differ per kind (and, against a remote server, are built from
reflected descriptors), so their fields are reached dynamically; these
accessors keep that in one place instead of scattering casts.
"""

from __future__ import annotations

from typing import Any


def metadata(obj: Any) -> Any:
    """``obj.metadata``: every kind has it (the registry refuses kinds without)."""
    return obj.metadata


def object_id(obj: Any) -> str:
    return str(obj.metadata.id)


def has_status(obj: Any) -> bool:
    return "status" in obj.DESCRIPTOR.fields_by_name and bool(obj.HasField("status"))


def descriptor(obj: Any) -> Any:
    """A message's (or class's) descriptor, typed loosely: upb and python descriptors differ in stubs."""
    return obj.DESCRIPTOR


def repeated(field: Any) -> bool:
    """``is_repeated`` where the runtime has it; ``label`` (its deprecated predecessor) elsewhere."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == 3)  # 3: LABEL_REPEATED
