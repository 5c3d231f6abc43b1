"""A kind served by a remote server whose plugin is not installed here is known to the CLI by
reflection alone, which carries no declared plural: `stigmer kinds` listed `Pantry  pantrys`
and `stigmer get pantries` was an unknown kind. The list request names the plural as `kind new`
writes it from the declaration (``ListPantriesRequest``), so the CLI takes it from there."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from stigmer_core.cli.catalog import _served_aliases, _served_plural


def _query_service(kind: str, list_request: str) -> Any:
    """A real service descriptor with a ``list`` rpc taking ``list_request``."""
    proto = descriptor_pb2.FileDescriptorProto(name=f"served_{kind.lower()}.proto", package=f"served.{kind.lower()}")
    for message in (list_request, f"{kind}List"):
        proto.message_type.add(name=message)
    service = proto.service.add(name=f"{kind}QueryController")
    service.method.add(
        name="list", input_type=f".{proto.package}.{list_request}", output_type=f".{proto.package}.{kind}List"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool.FindServiceByName(f"{proto.package}.{kind}QueryController")


@pytest.mark.parametrize(
    ("kind", "request_name", "plural"),
    [
        ("Pantry", "ListPantriesRequest", "pantries"),
        ("Box", "ListBoxesRequest", "boxes"),
        ("Agent", "ListAgentsRequest", "agents"),
        ("Gizmo", "ListThingsRequest", "gizmos"),  # a request named otherwise: the name + s, as before
    ],
)
def test_a_served_kind_is_named_by_the_plural_its_list_request_gives(kind: str, request_name: str, plural: str) -> None:
    query = _query_service(kind, request_name)
    assert _served_plural(query, kind) == plural
    aliases = _served_aliases(query, kind)
    assert kind.lower() + "s" in (plural, *aliases), "the name + s still answers, as it did"
