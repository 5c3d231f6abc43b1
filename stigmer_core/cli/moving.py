"""``import --to-org``: a document moved from the org it names into another.

An object's own org is ``metadata.org``, but a reference may name an org too
(an ``ApiResourceReference``: an agent's ``environmentRefs``, its
``skillRefs``, or any third-party kind's field of that type). A reference
naming the org the document comes from points at an object that moves with
it, so it is moved as well; left behind, the server would take it for an
object of another org and refuse it. A reference naming any other org names
an object that stays where it is, and is kept.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from google.protobuf.message import Message

from stigmer_core.cli.envelope import metadata, repeated
from stigmer_core.cli.errors import CliError

REFERENCE = "stigmer.commons.apiresource.v1.ApiResourceReference"


def move(message: Message, to_org: str) -> str:
    """Put ``message`` (a resource) and every reference naming its org in ``to_org``, in place;
    the org it named before ("" when none)."""
    meta = metadata(message)
    source = str(meta.org)
    if source:
        for reference in references(message):
            if reference.org == source:
                reference.org = to_org
    meta.org = to_org
    return source


def references(message: Message) -> Iterator[Any]:
    """Every ``ApiResourceReference`` set anywhere in ``message``: singular, repeated or map values."""
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.full_name.startswith("google.protobuf."):
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.message_type is not None else []
        elif repeated(field):
            items = list(value)
        else:
            items = [value]
        for item in items:
            if item.DESCRIPTOR.full_name == REFERENCE:
                yield item
            else:
                yield from references(item)


def one_org(named: Collection[str], to_org: str) -> None:
    """Refuse to merge several orgs into ``to_org``: their slugs would clash, and a reference by
    slug would find the other org's object. Nothing has been written when this is asked."""
    if len(named) < 2:
        return
    orgs = sorted(named)
    listed = ", ".join(f"'{org}'" for org in orgs)
    raise CliError(
        f"--to-org {to_org} moves the objects of one org, but the documents name {len(orgs)} orgs ({listed}); "
        f"nothing was imported (export one org, `stigmer export --all --org {orgs[0]} > {orgs[0]}.yaml`, "
        "and import that)"
    )
