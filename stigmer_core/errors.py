"""The one exception tree of Stigmer Core.

::

    StigmerError
    ├── InvalidArgument        field-level violations (google.rpc.BadRequest)
    ├── NotFound
    ├── AlreadyExists
    ├── Conflict               stale resource version (ABORTED)
    ├── FailedPrecondition     illegal state transition, live references
    ├── ResourceExhausted      message or page too large
    ├── Unauthenticated
    ├── PermissionDenied
    ├── Unavailable            shutting down
    ├── Unimplemented          an rpc a plugin chose not to serve
    ├── PluginFault            a plugin's code broke its contract while serving
    │                          (INTERNAL, with a message naming the plugin)
    └── StartupError           the daemon cannot start as configured
        ├── RegistryError      a plugin declared something impossible
        ├── DataDirBusy        another daemon holds the data directory
        ├── AddressUnavailable the listen address cannot be bound
        ├── ReadableOnly       the store may be read, not written, as configured
        │                      (its secret key is missing or another one):
        │                      ``Application.open(read_only=True)`` opens it
        └── InsecureTransport  a server open to the network without TLS and
                               authentication, or a token about to cross
                               the network in clear

Steps raise these; ``stigmer_core.status`` is the only place that turns them
into gRPC status codes, and ``from_rpc_error`` turns a status back into the
same exception on the client side, so both paths speak one vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class FieldViolation:
    """One bad field: a dotted path (``metadata.slug``) and why it is bad."""

    field: str
    description: str


class StigmerError(Exception):
    """Base of every error the framework raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(StigmerError):
    def __init__(self, message: str, violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """The common case: one field is wrong."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(StigmerError):
    pass


class OrgNotVisible(NotFound):
    """The caller named an org it has no role in: answered NOT_FOUND, as an org that does not
    exist is (whether it exists is not told), and logged as a refusal, since an insider of one
    org probing another's names leaves no other trace."""


class AlreadyExists(StigmerError):
    pass


class Conflict(StigmerError):
    @classmethod
    def version(cls, what: str, given: int, stored: int, *, by: str = "") -> Conflict:
        """A write guarded by a ``resource_version`` that is not the stored one. Only an older one is
        stale (someone wrote since it was read); a newer one was never issued (a typo, another
        object's, or another store's), and calling it stale would send its client looking for a
        writer that does not exist."""
        if given < stored:
            return cls(
                f"{what} was modified{by}: resource_version {given} is stale (current: {stored}); re-read and retry"
            )
        return cls(
            f"{what}: resource_version {given} does not match the stored one (current: {stored}); no version newer "
            "than the stored one was ever issued: re-read and retry"
        )


class FailedPrecondition(StigmerError):
    pass


class ResourceExhausted(StigmerError):
    pass


class Unauthenticated(StigmerError):
    pass


class PermissionDenied(StigmerError):
    pass


class Unavailable(StigmerError):
    pass


class Unimplemented(StigmerError):
    pass


class DeadlineExceeded(StigmerError):
    """The call ended (its deadline passed, or its client cancelled it) before its write began:
    nothing was written, so a client's retry does not meet its own earlier write."""


class PluginFault(StigmerError):
    """A plugin's code broke its contract while serving (an index's ``values`` returned a string
    where tuples of strings belong): a bug, so INTERNAL, but with a message naming the plugin,
    kind and what is wrong, because the one who sees it is usually the plugin's author."""


class StartupError(StigmerError):
    """Raised before serving; never mapped to a gRPC status."""


class RegistryError(StartupError):
    """A plugin declared something the registry cannot serve."""


class DataDirBusy(StartupError):
    pass


class AddressUnavailable(StartupError):
    pass


class InsecureTransport(StartupError):
    pass


class ReadableOnly(StartupError):
    """The store cannot be opened to write, but it can be read: what it holds apart from
    what the missing piece guards (a lost secret key: sealed values) is still there to take.

    ``problem`` says what is wrong in a clause a caller can build on ("the key file X is
    missing, ..."); the message adds what to do about it.
    """

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message
