"""The state one request carries through its pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from google.protobuf.message import Message

from stigmer_core.auth.access import LOCAL_ADMIN, Access, Caller

if TYPE_CHECKING:
    from stigmer_core.kinds.resources import Resources
    from stigmer_core.kinds.runtime import KindRuntime, Registry
    from stigmer_core.pipeline.events import EventHub
    from stigmer_core.store.protocol import Store


@attrs.define(slots=True)
class RequestContext:
    """Mutable per-request state; steps read and write its fields.

    ``request`` is the decoded rpc input. Steps before the transaction see
    ``resources`` as None. Inside it, ``resources`` is the kind-aware view of
    the transaction, ``existing`` the stored object an operation acts on and
    ``resource`` the state being built; ``response`` is what the rpc returns.
    ``scratch`` is for a kind's steps to hand data to each other.
    """

    kind: KindRuntime
    registry: Registry
    operation: str
    request: Message
    metadata: Sequence[tuple[str, str | bytes]] = ()
    principal: str = "local"
    """Who the request runs as, by name: what audit fields and events record."""
    caller: Caller = LOCAL_ADMIN
    """The authenticated caller and its roles (``Caller.can(access, org)``)."""
    access: Access = Access.READ
    """What the rpc needs from the caller's role, from how its method is bound."""
    org: str = ""
    resources: Resources | None = None
    existing: Message | None = None
    resource: Message | None = None
    response: Message | None = None
    unchanged: bool = False
    read_as: Message | None = None
    """A copy of ``existing`` as the write read it, to find a step that changed ``existing``
    (which is to be read only: the write's index moves and its "nothing changed" go by it)."""
    identity: tuple[str, str, str] = ("", "", "")
    """A create's id, org and slug as checked and stamped, which no step may change."""
    scratch: dict[str, Any] = attrs.field(factory=dict)
    engine: Store | None = None
    """The store itself, for steps whose response outlives the transaction (streams)."""
    active: Callable[[], bool] = lambda: True
    """Whether the caller is still there (streams stop when it is not)."""
    on_end: Callable[[Callable[[], None]], object] | None = None
    """Registers a function called once the call ends (its client cancelled, its deadline passed):
    a stream waiting for events is woken by it to end at once, not at its next look at ``active``."""
    events: EventHub | None = None
    """The application's event dispatcher, for server streams."""
    yields_idle: bool = False
    """Whether the stream's driver waits itself: the framework's streams then yield an
    ``events.Idle`` where they would wait for the next event, and the driver (an event loop
    serving them inline) awaits it, holding no thread. Only the framework's own steps see it."""

    @property
    def default_org(self) -> str:
        """The org a request that names none acts in: the caller's, when it has exactly one."""
        orgs = self.caller.orgs
        return orgs[0] if len(orgs) == 1 else self.registry.default_org

    def reset_transaction_state(self) -> None:
        """Forget what a previous run of the transactional steps produced."""
        self.resources = None
        self.existing = None
        self.resource = None
        self.response = None
        self.unchanged = False
        self.read_as = None

    @property
    def store(self) -> Resources:
        """The transaction view; only valid in transactional phases."""
        if self.resources is None:
            raise RuntimeError(f"step of {self.operation!r} used the store outside the transaction phases")
        return self.resources
