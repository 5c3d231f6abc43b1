"""``import --new-ids``: copies under ids of their own, naming each other as the originals did.

An id names one object, in one org, across every org of a store: an export imported a second
time into the server it came from (an org copied into another, a staging org made from
production's export) is refused object by object, each id being another org's. With
``--new-ids`` a document's ``metadata.id`` is left out, so the object is found by its org and
slug, as a document written by hand is, and one that is not there is created under an id the
server gives it. Every other field of a later document that holds the id of an object the
import already wrote (an owner reference, an instance's agent, a session's instance, an
``ApiResourceReference`` by id) is changed to the id of its copy before that document is
written, so the copies name each other as the originals did. Documents are written
dependencies first, so what a document names is written before it.

An id is a kind's prefix and a ULID, which no other value a field holds equals by chance, so
a string equal to a renamed id is that id wherever it is; a part of a longer string is not
looked at. Objects outside the import keep the ids that name them.
"""

from __future__ import annotations

from typing import Any

import attrs
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.cli.documents import Document
from stigmer_core.cli.envelope import metadata, repeated

_STRING = FieldDescriptor.TYPE_STRING


@attrs.define
class Renamer:
    """The ids of the objects an import wrote so far, each with its copy's."""

    copies: dict[str, str] = attrs.field(factory=dict)

    def prepare(self, doc: Document) -> tuple[str, Document]:
        """The document's own id (``""`` when it has none), and the document to write instead:
        without its id, and with the ids of the copies made so far in place of the originals'."""
        message = doc.message
        meta = metadata(message)
        own = str(meta.id)
        meta.id = ""
        if self.copies:
            rename(message, self.copies)
        return own, attrs.evolve(doc, raw=message.SerializeToString())

    def written(self, own: str, result: Message | None) -> None:
        """Remember the copy the server answered with (made, or found by slug on a re-run)."""
        if own and result is not None:
            self.copies[own] = str(metadata(result).id)


def rename(message: Message, copies: dict[str, str]) -> int:
    """Replace, in place, every string anywhere in ``message`` equal to a key of ``copies`` by its
    value (map values too, not map keys); the number replaced."""
    changed = 0
    for field, value in message.ListFields():
        if field.type == _STRING:
            if repeated(field):
                for i, item in enumerate(value):
                    if item in copies:
                        value[i] = copies[item]
                        changed += 1
            elif value in copies:
                setattr(message, field.name, copies[value])
                changed += 1
        elif field.message_type is not None:
            changed += _rename_within(field, value, copies)
    return changed


def _rename_within(field: FieldDescriptor, value: Any, copies: dict[str, str]) -> int:
    entry: Any = field.message_type
    if entry.GetOptions().map_entry:
        value_field = entry.fields_by_name["value"]
        if value_field.message_type is not None:
            return sum(rename(item, copies) for item in value.values())
        if value_field.type != _STRING:
            return 0
        hits = [key for key, item in value.items() if item in copies]
        for key in hits:
            value[key] = copies[value[key]]
        return len(hits)
    if repeated(field):
        return sum(rename(item, copies) for item in value)
    return rename(value, copies)
