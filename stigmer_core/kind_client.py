"""Call any kind's standard rpcs by name, without its generated stubs.

The contract suite, the CLI and tools that handle every kind alike use this;
application code normally uses the generated stubs, which work on the same
channels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from stigmer_core.kinds.runtime import KindRuntime


class KindClient:
    """Standard operations of one kind over any grpc.Channel."""

    def __init__(self, channel: grpc.Channel, kind: KindRuntime) -> None:
        self.kind = kind
        self._calls: dict[str, Any] = {}
        self._request: dict[str, type[Message]] = {}
        for path, binding in kind.methods.items():
            self._request[binding.operation] = binding.request_cls
            factory = channel.unary_stream if binding.server_streaming else channel.unary_unary
            self._calls[binding.operation] = factory(
                path,
                request_serializer=binding.request_cls.SerializeToString,
                response_deserializer=binding.response_cls.FromString,
            )

    def call(self, operation: str, request: Message, *, timeout: float | None = 10.0) -> Any:
        return self._calls[operation](request, timeout=timeout)

    def create(self, resource: Message) -> Message:
        return self.call("create", resource)  # type: ignore[no-any-return]

    def apply(self, resource: Message) -> Message:
        return self.call("apply", resource)  # type: ignore[no-any-return]

    def update(self, resource: Message) -> Message:
        return self.call("update", resource)  # type: ignore[no-any-return]

    def delete(self, object_id: str) -> Message:
        return self.call("delete", self._request["delete"](value=object_id))  # type: ignore[no-any-return]

    def get(self, object_id: str) -> Message:
        return self.call("get", self._request["get"](value=object_id))  # type: ignore[no-any-return]

    def get_by_reference(self, *, org: str = "", slug: str = "", id: str = "", kind: str = "") -> Message:
        ref = self._request["getByReference"](org=org, slug=slug, id=id)
        if kind:  # the published API's kind is an enum, ours a string: set it only when given
            ref.kind = kind  # type: ignore[attr-defined]
        return self.call("getByReference", ref)  # type: ignore[no-any-return]

    def list_page(
        self, *, org: str = "", labels: Mapping[str, str] | None = None, page_size: int = 0, page_token: str = ""
    ) -> Any:
        request = self._request["list"](page_size=page_size, page_token=page_token)
        if org:
            request.org = org  # type: ignore[attr-defined]
        if labels:
            request.labels.update(labels)  # type: ignore[attr-defined]
        return self.call("list", request)

    def list_all(
        self, *, org: str = "", labels: Mapping[str, str] | None = None, page_size: int = 0
    ) -> Iterator[Message]:
        token = ""
        while True:
            page = self.list_page(org=org, labels=labels, page_size=page_size, page_token=token)
            yield from page.entries
            token = page.next_page_token
            if not token:
                return
