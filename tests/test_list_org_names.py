"""An org name that cannot be one is refused by every list and watch, on both stores.

Without the check a typo in ``org`` lists nothing (it reads like "no objects")
and a watch of it never sends an event: the caller cannot tell the name was wrong.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests.hardening_support import fails, fields_of

NOT_ORGS = ("UPPER", "Not Valid!", "-dash", "dash-", "a b")


@pytest.fixture
def channel(stigmer_server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stigmer_server.address) as channel:
        yield channel


def test_every_list_with_an_org_refuses_a_name_that_is_not_one(stigmer_app: Application, channel: grpc.Channel) -> None:
    checked = []
    for kind in stigmer_app.registry.kinds:
        client = KindClient(channel, kind)
        for path, binding in kind.methods.items():
            fields = binding.request_cls.DESCRIPTOR.fields_by_name
            if not binding.operation.startswith("list") or "org" not in fields:
                continue
            checked.append(path)
            for org in NOT_ORGS:
                request = binding.request_cls(org=org)
                error = fails(
                    grpc.StatusCode.INVALID_ARGUMENT, lambda r=request, op=binding.operation, c=client: c.call(op, r)
                )  # type: ignore[misc]
                assert fields_of(error) == ["org"], (path, org)
        if "list" in client._request:  # a well-formed name of no objects is still an empty list
            assert list(client.list_all(org="some-org")) == []
    assert any(path.endswith("AgentQueryController/list") for path in checked)


@pytest.mark.parametrize("org", NOT_ORGS)
def test_a_watch_refuses_a_name_that_is_not_an_org(channel: grpc.Channel, org: str) -> None:
    stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent", org=org), timeout=10)
    assert fields_of(fails(grpc.StatusCode.INVALID_ARGUMENT, lambda: next(stream))) == ["org"]
