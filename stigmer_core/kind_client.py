"""Call any kind's standard rpcs by name, without its generated stubs.

The contract suite, the CLI and tools that handle every kind alike use this;
application code normally uses the generated stubs, which work on the same
channels. Like a generated stub's methods, every call takes ``timeout`` and
``metadata``; the client's own (given when it is made) apply where a call
gives none.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, Literal, TypeAlias

import grpc
from google.protobuf.message import Message
from typing_extensions import TypeVar

from stigmer_core.kinds.runtime import KindRuntime, Registry

UPDATE_MASK = "update_mask"
"""The field of an update request that names the paths the update sets (Google's AIP-134)."""
_FIELD_MASK = "google.protobuf.FieldMask"


DEFAULT_TIMEOUT = 10.0
"""Seconds a call may take when neither the client nor the call says otherwise."""

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
"""gRPC metadata as generated stubs take it: (key, value) pairs, a value in bytes for a ``-bin`` key."""


class _ClientDefault(enum.Enum):
    """A call's ``timeout`` left out, told apart from ``None``, which grpc reads as no deadline."""

    TIMEOUT = "the client's"

    def __repr__(self) -> str:
        return "<the client's timeout>"


CLIENTS = _ClientDefault.TIMEOUT
"""A call's ``timeout`` when it gives none: the client's."""
Timeout: TypeAlias = float | Literal[_ClientDefault.TIMEOUT] | None
"""A call's ``timeout``: seconds, ``None`` for no deadline, or left out for the client's."""


R = TypeVar("R", bound=Message, default=Message)
"""The kind's resource class: what ``create``, ``get`` and the rest answer with. Inferred from a
``KindClient(channel, agent_pb2.Agent)``, or given (``KindClient[agent_pb2.Agent](channel, "Agent")``);
plain ``Message`` when the kind is named by a string or a runtime only."""


@functools.cache
def installed_kinds() -> Registry:
    """The kinds of every plugin installed here (entry points), built once per process: what a
    ``KindClient`` made with a kind's name takes its runtime from, with no store opened."""
    from stigmer_core.kinds.registry import build_registry
    from stigmer_core.plugins import plugin_manager

    return build_registry(plugin_manager())


def update_mask_field(request: type[Message]) -> str | None:
    """``update_mask`` when the request carries a FieldMask by that name, else None."""
    field = request.DESCRIPTOR.fields_by_name.get(UPDATE_MASK)
    if field is None or field.message_type is None or field.message_type.full_name != _FIELD_MASK:
        return None
    return UPDATE_MASK


def _kind_of(resource_cls: type[Message]) -> KindRuntime:
    """The installed kind whose resource is ``resource_cls`` (by its full name: a class from another
    copy of the generated code names the same kind)."""
    registry = installed_kinds()
    name = resource_cls.DESCRIPTOR.full_name
    for kind in registry.kinds:
        if kind.resource_cls.DESCRIPTOR.full_name == name:
            return kind
    served = ", ".join(sorted(k.name for k in registry.kinds))
    raise KeyError(f"no kind installed here has the resource {name} (installed kinds: {served})")


class KindClient(Generic[R]):
    """Standard operations of one kind over any grpc.Channel.

    A write whose request wraps the resource (``UpdateAgentInput{resource,
    update_mask}``) is given the resource and wrapped here; how is read from
    the descriptors once, when the client is made.

    ``timeout`` (seconds, ``None`` for no deadline) and ``metadata`` are the
    client's for every call, as a program's own deadline and headers
    (``stigmer-dry-run``, a tracing id) are usually one per client, not per
    call; a call's ``timeout`` replaces the client's, and its ``metadata`` is
    sent after the client's, so a call adds a header without repeating the
    rest. ``list_all`` gives each page's call the timeout.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        kind: KindRuntime | str | type[R],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
    ) -> None:
        """``kind``: the kind's runtime (``app.registry.kind("Agent")``), its name or an alias
        (``"Agent"``, ``"agents"``), or its resource class (``agent_pb2.Agent``, which types the
        answers), the last two looked up among the plugins installed here (``installed_kinds``):
        a program calling a server needs nothing but the kind's package installed. An unknown
        name is a ``KeyError`` naming the kinds there are."""
        if isinstance(kind, str):
            kind = installed_kinds().kind(kind)
        elif isinstance(kind, type) and issubclass(kind, Message):
            kind = _kind_of(kind)
        elif not isinstance(kind, KindRuntime):
            raise TypeError(
                f"KindClient takes a kind's name, its resource class or its runtime, not {type(kind).__name__}"
                + (
                    f" (give the class, {type(kind).__name__}, not an instance of it)"
                    if isinstance(kind, Message)
                    else ""
                )
            )
        self.kind = kind
        self.timeout = timeout
        self.metadata: tuple[tuple[str, str | bytes], ...] = tuple(metadata)
        self._calls: dict[str, Any] = {}
        self._request: dict[str, type[Message]] = {}
        self.update_mask: str | None = None
        """The update request's field mask (``update_mask``), None when it has none."""
        for path, binding in kind.methods.items():
            if binding.operation == "update":
                self.update_mask = update_mask_field(binding.request_cls)
            self._request[binding.operation] = binding.request_cls
            factory = channel.unary_stream if binding.server_streaming else channel.unary_unary
            self._calls[binding.operation] = factory(
                path,
                request_serializer=binding.request_cls.SerializeToString,
                response_deserializer=binding.response_cls.FromString,
            )

    def call(self, operation: str, request: Message, *, timeout: Timeout = CLIENTS, metadata: Metadata = ()) -> Any:
        """Any operation of the kind by its binding's name, for those with no method here
        (``updateStatus``, ``subscribe``): the request goes as it is, unwrapped."""
        sent = (*self.metadata, *metadata)
        return self._calls[operation](
            request, timeout=self.timeout if timeout is CLIENTS else timeout, metadata=sent or None
        )

    def _wrapped(self, operation: str, resource: Message) -> Message:
        request_cls = self._request[operation]
        if isinstance(resource, request_cls):
            return resource
        request = request_cls()
        getattr(request, self.kind.resource_field or "").CopyFrom(resource)
        return request

    def create(self, resource: Message, *, timeout: Timeout = CLIENTS, metadata: Metadata = ()) -> R:
        request = self._wrapped("create", resource)
        return self.call("create", request, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def apply(self, resource: Message, *, timeout: Timeout = CLIENTS, metadata: Metadata = ()) -> R:
        request = self._wrapped("apply", resource)
        return self.call("apply", request, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def update(
        self,
        resource: Message,
        mask: Sequence[str] | None = None,
        *,
        timeout: Timeout = CLIENTS,
        metadata: Metadata = (),
    ) -> R:
        """Update to ``resource``; ``mask`` (the paths it sets) goes in the request's ``update_mask``."""
        request = self._wrapped("update", resource)
        if mask is not None:
            if self.update_mask is None:
                raise TypeError(f"{self.kind.name}'s update request has no {UPDATE_MASK}")
            field = getattr(request, self.update_mask)
            field.SetInParent()  # present even when empty
            field.paths.extend(mask)
        return self.call("update", request, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def _new(self, operation: str, **fields: Any) -> Any:
        """A request of the operation's class; typed ``Any``, as the class is known only at run time."""
        request_cls: Any = self._request[operation]
        return request_cls(**fields)

    def delete(self, object_id: str, *, timeout: Timeout = CLIENTS, metadata: Metadata = ()) -> R:
        request = self._new("delete", value=object_id)
        return self.call("delete", request, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def get(self, object_id: str, *, timeout: Timeout = CLIENTS, metadata: Metadata = ()) -> R:
        request = self._new("get", value=object_id)
        return self.call("get", request, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def get_by_reference(
        self,
        *,
        org: str = "",
        slug: str = "",
        id: str = "",
        kind: str = "",
        timeout: Timeout = CLIENTS,
        metadata: Metadata = (),
    ) -> R:
        ref: Message = self._new("getByReference", org=org, slug=slug, id=id)
        if kind:  # the published API's kind is an enum, ours a string: set it only when given
            ref.kind = kind  # type: ignore[attr-defined]
        return self.call("getByReference", ref, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

    def list_page(
        self,
        *,
        org: str = "",
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
        filters: Mapping[str, Any] | None = None,
        timeout: Timeout = CLIENTS,
        metadata: Metadata = (),
    ) -> Any:
        """One page. ``filters``: the kind's own fields of its list request, as its constructor
        takes them (``{"phase": "EXECUTION_PENDING"}``, an enum by name or number); a field the
        request does not have is a ``ValueError`` naming it."""
        request: Message = self._new("list", page_size=page_size, page_token=page_token, **(filters or {}))
        if org:
            request.org = org  # type: ignore[attr-defined]
        if labels:
            request.labels.update(labels)  # type: ignore[attr-defined]
        return self.call("list", request, timeout=timeout, metadata=metadata)

    def list_all(
        self,
        *,
        org: str = "",
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        filters: Mapping[str, Any] | None = None,
        timeout: Timeout = CLIENTS,
        metadata: Metadata = (),
    ) -> Iterator[R]:
        token = ""
        while True:
            page = self.list_page(
                org=org,
                labels=labels,
                page_size=page_size,
                page_token=token,
                filters=filters,
                timeout=timeout,
                metadata=metadata,
            )
            yield from page.entries
            token = page.next_page_token
            if not token:
                return
