"""The one exception tree of Stigmer Core.

::

    StigmerError               (a status no class below stands for: UNKNOWN,
    │                          CANCELLED, INTERNAL, ... as ``from_rpc_error`` gives it)
    ├── InvalidArgument        field-level violations (google.rpc.BadRequest)
    ├── NotFound
    │   └── OrgNotVisible      an org the caller has no role in
    ├── AlreadyExists
    ├── Conflict               stale resource version (ABORTED)
    ├── FailedPrecondition     illegal state transition, live references
    ├── ResourceExhausted      message or page too large
    ├── Unauthenticated
    ├── PermissionDenied
    ├── Unavailable            shutting down
    ├── Unimplemented          an rpc a plugin chose not to serve
    ├── DeadlineExceeded       the call ended before its write began
    ├── PluginFault            a plugin's code broke its contract while serving
    │                          (INTERNAL, with a message naming the plugin)
    └── StartupError           the daemon cannot start as configured
        ├── RegistryError      a plugin declared something impossible
        ├── DataDirBusy        another daemon holds the data directory
        ├── AddressUnavailable the listen address cannot be bound
        ├── DatabaseUnreachable the store's database did not answer as it opened
        ├── StoreInUse         a key rotation needs the database alone, and
        │                      daemons hold it
        ├── ReadableOnly       the store may be read, not written, as configured
        │   │                  (the secrets plugin's SecretKeyError: its secret
        │   │                  key is missing or another one):
        │   │                  ``Application.open(read_only=True)`` opens it
        │   ├── KindDowngrade  a kind's plugin is older than the release that
        │   │                  last reconciled the store
        │   ├── KindServedOtherwise  a command's plugin release differs from
        │   │                  the one a shared store's daemons serve
        │   └── ReadOnlyMount  its data file is on a read-only mount
        └── InsecureTransport  a server open to the network without TLS and
                               authentication, or a token about to cross
                               the network in clear

Steps raise these; each class names the gRPC status code it travels as
(``grpc_status``), ``stigmer_core.status`` is the only place that turns them
into gRPC statuses, and ``from_rpc_error`` turns a status back into the
same exception on the client side, so both paths speak one vocabulary.
Every error's ``code`` is the gRPC status code it travels as: its class's
(``grpc_status``), or, for one ``from_rpc_error`` made, the code the call
ended with, so a client tells an UNKNOWN from a CANCELLED without the grpc error.

Every error but a field-level ``InvalidArgument`` also carries a ``reason``
(a stable UPPER_SNAKE_CASE name, sent as ``google.rpc.ErrorInfo``) and string
``metadata``: one status code covers refusals a client must tell apart (a
stale version it can re-read past, a run another runner claimed), and a
client in any language should not have to match English text to do it. A
class names its general reason; a raise that knows more names a narrower one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import grpc

# A library's log records go where its application's logging sends them, and nowhere when it sets
# none up: with no handler on the way, logging's last resort printed them on the application's
# stderr (a refused call's `denied:` line, from `connect(data_dir=...)` or `Application.open`). The
# daemon and the command line give the root logger their own handler, which records still reach.
# Set here, in the module every part of the package that logs imports, not in the package's
# __init__, which `stigmer --help` and `--version` import without paying for logging.
logging.getLogger("stigmer_core").addHandler(logging.NullHandler())

DOMAIN = "stigmer.ai"
"""``ErrorInfo.domain`` of every reason: the domain the API's own names use (``agentic.stigmer.ai/v1``)."""


@attrs.frozen
class FieldViolation:
    """One bad field: a dotted path (``metadata.slug``) and why it is bad (text, whatever a step
    passed: a refusal must reach its caller as one, not as a fault in building it)."""

    field: str = attrs.field(converter=str)
    description: str = attrs.field(converter=str)


def _violation(given: object) -> FieldViolation:
    """A violation as a plugin's step may give one: a FieldViolation, or a (field, description) pair."""
    if isinstance(given, FieldViolation):
        return given
    if isinstance(given, tuple | list) and len(given) == 2:
        return FieldViolation(given[0], given[1])
    return FieldViolation("(request)", given)


class StigmerError(Exception):
    """Base of every error the framework raises on purpose."""

    reason: str = "ERROR"
    grpc_status: str = "INTERNAL"
    """The name of the gRPC status code the class travels as (``grpc.StatusCode[...]``), inherited
    by subclasses: written beside each class, so that the tree and its codes read as one and
    ``code`` needs no other module. ``status`` sends it; INTERNAL, this base's, is a bug's or a
    plugin's fault."""
    _code: grpc.StatusCode | None = None

    def __init__(self, message: str, *, reason: str = "", metadata: Mapping[str, object] | None = None) -> None:
        if not isinstance(message, str):  # a step's ``raise NotFound(exc)``: said as text, never a fault of its own
            message = type(self).__name__ if message is None else str(message)
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = str(reason)
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in (metadata or {}).items() if v != ""}

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code this error travels as. One ``from_rpc_error`` made keeps the code
        its call ended with, which several codes share a class for (UNKNOWN, CANCELLED and
        INTERNAL are all a bare ``StigmerError``); any other is its class's (``grpc_status``), as
        the server sends it."""
        if self._code is not None:
            return self._code
        import grpc  # here: only a caller that asks pays for grpc (``stigmer --help`` does not)

        return grpc.StatusCode[self.grpc_status]

    @code.setter
    def code(self, code: grpc.StatusCode) -> None:
        self._code = code


class InvalidArgument(StigmerError):
    grpc_status = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Iterable[FieldViolation] = (),
        *,
        reason: str = "",
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        if isinstance(violations, str | bytes) or not isinstance(violations, Iterable):
            violations = (violations,)  # one, given bare
        self.violations: tuple[FieldViolation, ...] = tuple(_violation(v) for v in violations)

    @classmethod
    def field(
        cls, field: str, description: str, *, reason: str = "", metadata: Mapping[str, object] | None = None
    ) -> InvalidArgument:
        """The common case: one field is wrong (``reason``: a narrower one a client acts on)."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)], reason=reason, metadata=metadata)


class NotFound(StigmerError):
    grpc_status = "NOT_FOUND"
    reason = "NOT_FOUND"


class OrgNotVisible(NotFound):
    """The caller named an org it has no role in: answered NOT_FOUND, as an org that does not
    exist is (whether it exists is not told), and logged as a refusal, since an insider of one
    org probing another's names leaves no other trace."""

    reason = "ORG_NOT_FOUND"


class AlreadyExists(StigmerError):
    grpc_status = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class Conflict(StigmerError):
    grpc_status = "ABORTED"
    reason = "STALE_VERSION"

    @classmethod
    def version(
        cls, what: str, given: int, stored: int, *, kind: str = "", object_id: str = "", runner: str = ""
    ) -> Conflict:
        """A write guarded by a ``resource_version`` that is not the stored one. Only an older one is
        stale (someone wrote since it was read); a newer one was never issued (a typo, another
        object's, or another store's), and calling it stale would send its client looking for a
        writer that does not exist. ``runner``: the run was claimed by that runner since it was read
        (RUN_CLAIMED), so re-reading will not make it the caller's; any other stale version may be."""
        metadata = {"kind": kind, "id": object_id, "resourceVersion": given, "currentResourceVersion": stored}
        if given < stored and runner:
            return cls(
                f"{what} was modified, claimed by runner '{runner}': resource_version {given} is stale "
                f"(current: {stored})",
                reason="RUN_CLAIMED",
                metadata={**metadata, "runner": runner},
            )
        if given < stored:
            return cls(
                f"{what} was modified: resource_version {given} is stale (current: {stored}); re-read and retry",
                metadata=metadata,
            )
        return cls(
            f"{what}: resource_version {given} does not match the stored one (current: {stored}); no version newer "
            "than the stored one was ever issued: re-read and retry",
            reason="VERSION_NOT_ISSUED",
            metadata=metadata,
        )


class FailedPrecondition(StigmerError):
    grpc_status = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(StigmerError):
    grpc_status = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(StigmerError):
    grpc_status = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(StigmerError):
    grpc_status = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class Unavailable(StigmerError):
    grpc_status = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class Unimplemented(StigmerError):
    grpc_status = "UNIMPLEMENTED"
    reason = "UNIMPLEMENTED"


class DeadlineExceeded(StigmerError):
    """The call ended (its deadline passed, or its client cancelled it) before its write began:
    nothing was written, so a client's retry does not meet its own earlier write."""

    grpc_status = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class PluginFault(StigmerError):
    """A plugin's code broke its contract while serving (an index's ``values`` returned a string
    where tuples of strings belong): a bug, so INTERNAL, but with a message naming the plugin,
    kind and what is wrong, because the one who sees it is usually the plugin's author."""

    reason = "PLUGIN_FAULT"


class StartupError(StigmerError):
    """Raised before serving; never mapped to a gRPC status."""


class RegistryError(StartupError):
    """A plugin declared something the registry cannot serve."""


class DataDirBusy(StartupError):
    pass


class AddressUnavailable(StartupError):
    pass


class DatabaseUnreachable(StartupError):
    """The store's database could not be reached as the store opened: down, starting, or not
    accepting connections yet. ``stigmer serve`` waits for it (``--store-wait``) before giving up,
    since a database and its daemons are often started together."""


class StoreInUse(StartupError):
    """The store was to be held alone (a key rotation) while daemons hold it (``StoreUse.SOLE``)."""

    reason = "STORE_IN_USE"


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


class KindDowngrade(ReadableOnly):
    """A kind is served here by an older release of its plugin than the one that last reconciled
    the store: serving it, or writing through it, would drop the fields and indexes the newer
    release added, but reading the store loses nothing (``reindex.reconcile``)."""


class KindServedOtherwise(ReadableOnly):
    """A command opened a store daemons share (a team server's database) with another release (or
    build) of a kind's plugin than the one that last reconciled it: reconciling it to this one, as
    a daemon's start does, would have every running daemon refuse writes of the kind, so a command
    never does; it can read the store (``reindex.reconcile``, ``settles``)."""


class ReadOnlyMount(ReadableOnly):
    """The LMDB data file is on a read-only mount (a disk the kernel remounted read-only after
    errors, a copy on read-only media): the daemon cannot serve it, but nothing can write it
    either, so it can be read without LMDB's lock file (``LmdbStore(read_only=True)``)."""
