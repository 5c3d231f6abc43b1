"""Mapping between the exception tree and gRPC status: the one place it happens.

Server side, ``abort`` turns a ``StigmerError`` into a rich status (a
``google.rpc.Status`` with ``BadRequest`` details for field violations, and an
``ErrorInfo`` naming the reason of every refusal) and anything else into
INTERNAL, which always means a bug here. Client side, ``from_rpc_error``
reverses it, so the CLI and tests can match on types and reasons, and keeps
the code the call ended with (``StigmerError.code``).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from stigmer_core import errors
from stigmer_core.tls_trouble import dial_failed, tls_trouble

log = logging.getLogger(__name__)

_MAPPED_BACK = (
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.Conflict,
    errors.FailedPrecondition,
    errors.ResourceExhausted,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.Unavailable,
    errors.Unimplemented,
    errors.DeadlineExceeded,
)
"""The classes a client's status turns back into, one per code (each class names its code,
``StigmerError.grpc_status``); a code none has is a bare ``StigmerError`` keeping it."""
_ERRORS = {grpc.StatusCode[cls.grpc_status]: cls for cls in _MAPPED_BACK}


def code_of(error: errors.StigmerError) -> grpc.StatusCode:
    """The code a server sends ``error`` as: its class's, INTERNAL for a class of none (a bug,
    or a ``PluginFault``). A client's error keeps the code it came with (``error.code``)."""
    return grpc.StatusCode[type(error).grpc_status]


MAX_VIOLATIONS = 50
"""Field violations a status carries, and characters of each text: they travel in trailing
metadata, which clients cap (grpc's C core at 8 KiB before it starts refusing, Node's HTTP/2
at 128 entries), so a request breaking a rule a hundred thousand times must not make an answer
no client can read."""
MAX_TEXT = 256
MAX_MESSAGE = 1024
"""Characters of a status message (it travels in the ``grpc-message`` header)."""
MAX_MESSAGE_HEADER = 1536
"""Bytes of a status message as ``grpc-message`` carries it: percent-encoded, so each byte that
is not printable ASCII takes three, and a message in any language stays within 1.5 KiB."""
MAX_DETAILS_BYTES = 4096
"""Bytes of the serialized ``google.rpc.Status`` (message, violations or reason), sent
base64-encoded in ``grpc-status-details-bin`` (5.5 KiB at most): with ``grpc-message``, within 8 KiB."""
MAX_METADATA = 16
"""Entries of an ``ErrorInfo``'s metadata; each key and value is cut at ``MAX_TEXT``."""
_REASON_ROOM = 160
"""Bytes kept for the ``ErrorInfo`` after a ``BadRequest``: its Any's type URL, domain and a reason."""


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
"""Control characters, as escapes: a message echoes what a request named (``session 'blue\\x00' not
found``), and a NUL or an escape sequence passed on raw reached a client's terminal or log."""


def _short(text: str, limit: int = MAX_TEXT) -> str:
    if not text.isprintable():
        text = text.translate(_CONTROL)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header_size(encoded: bytes) -> int:
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in encoded)


def _within_header(text: str, limit: int = MAX_MESSAGE_HEADER) -> str:
    encoded = text.encode()
    if _header_size(encoded) <= limit:
        return text
    size, cut = 9, 0  # the ellipsis, percent-encoded
    for cut, b in enumerate(encoded):  # noqa: B007 - the cut is where the room ends
        size += 1 if 0x20 <= b <= 0x7E and b != 0x25 else 3
        if size > limit:
            break
    return encoded[:cut].decode(errors="ignore") + "…"


def to_status(error: BaseException) -> grpc.Status:
    """The rich gRPC status for an error; INTERNAL for anything unexpected."""
    if not isinstance(error, errors.StigmerError) or isinstance(error, errors.StartupError):
        log.error("internal error (a bug in stigmer_core or a plugin)", exc_info=error)
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error: {type(error).__name__}")
        )
    code = code_of(error)
    message = _within_header(_short(error.message, MAX_MESSAGE))
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad = error_details_pb2.BadRequest()
        # the Any's type URL, the "more" line, and the ErrorInfo's reason after it
        room = MAX_DETAILS_BYTES - status.ByteSize() - 64 - _REASON_ROOM
        for v in error.violations[:MAX_VIOLATIONS]:
            shown = error_details_pb2.BadRequest.FieldViolation(
                field=_short(v.field), description=_short(v.description)
            )
            room -= shown.ByteSize() + 3
            if room < 0:
                break
            bad.field_violations.append(shown)
        if len(error.violations) > len(bad.field_violations):
            more = len(error.violations) - len(bad.field_violations)
            bad.field_violations.add(field="(request)", description=f"and {more} more violations not listed")
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    # every refusal names its reason, field violations too (AIP-193): a client in any language
    # matches one field of one detail, and a narrower reason (a bad page token) needs no parsing
    status.details.append(_error_info(error, MAX_DETAILS_BYTES - status.ByteSize()))
    return rpc_status.to_status(status)


def _error_info(error: errors.StigmerError, room: int) -> any_pb2.Any:
    """The error's reason and as much of its metadata as ``room`` bytes hold (a message at its
    cap leaves about 2.5 KiB; a reason with a few versions and names takes about 150 bytes)."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=errors.DOMAIN)
    room -= info.ByteSize() + 64  # the Any's type URL and framing
    for key, value in list(error.metadata.items())[:MAX_METADATA]:
        entry = error_details_pb2.ErrorInfo(metadata={_short(key): _short(value)})
        room -= entry.ByteSize()
        if room < 0:
            break
        info.metadata[_short(key)] = _short(value)
    detail = any_pb2.Any()
    detail.Pack(info)
    return detail


def abort(context: grpc.ServicerContext, error: BaseException) -> NoReturn:
    context.abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc always raises


async def abort_call(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> NoReturn:
    """``abort`` on grpc's asyncio server."""
    await send_status(context, to_status(error))


async def send_status(context: grpc.aio.ServicerContext[Any, Any], found: grpc.Status) -> NoReturn:
    """End an asyncio call with ``found`` (a sync handler's ``abort_with_status``, passed on)."""
    await context.abort(found.code, found.details, tuple(found.trailing_metadata or ()))
    raise AssertionError("abort returned")  # pragma: no cover - grpc always raises


_DETAILS_KEY = "grpc-status-details-bin"
_NARROWER: dict[str, type[errors.StigmerError]] = {
    errors.OrgNotVisible.reason: errors.OrgNotVisible,
    errors.PluginFault.reason: errors.PluginFault,
}
"""Reasons whose class is narrower than their code's, and built as every error is (INTERNAL's
class is ``StigmerError`` itself: a plugin's fault is told from a bug here by its reason)."""


def _rich_status(error: Any, code: grpc.StatusCode) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call's trailing metadata carries, of the call's own code.

    Read from the metadata itself rather than ``rpc_status.from_call``, which takes a sync call
    only: a ``grpc.aio`` error (``AioRpcError`` is no ``grpc.Call``) carries the same trailers."""
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return status if status.code == code.value[0] else None
    return None


def from_rpc_error(error: grpc.RpcError) -> errors.StigmerError:
    """The exception a failed call stands for, with field violations, reason and metadata restored
    (a status without an ``ErrorInfo``, from grpc itself or an older daemon, keeps its class's reason),
    and its ``code`` the call's: a code no class stands for (UNKNOWN, CANCELLED, INTERNAL) is a bare
    ``StigmerError`` a caller could not otherwise tell apart.

    Any failed call will do: a sync one, a ``grpc.aio`` one, the in-process channel's. A
    connection this client could not open for want of TLS it could set up (an untrusted or
    mismatched certificate, a server not serving TLS, CA or client files grpc could not use) is
    an ``Unavailable`` whose message says which, naming ``connect()``'s arguments, before grpc's."""
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = getattr(error, "details", None)
    message = (details() if callable(details) else None) or str(error)
    violations: list[errors.FieldViolation] = []
    info = error_details_pb2.ErrorInfo()
    status = _rich_status(error, code) if callable(code_of) else None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
    reason, metadata = info.reason, dict(info.metadata)
    cls = _ERRORS.get(code, errors.StigmerError)
    if cls is errors.Unavailable and info.domain != errors.DOMAIN:  # a stigmer server's words are its own
        message = _with_tls_trouble(message)
    found: errors.StigmerError
    if cls is errors.InvalidArgument:
        found = errors.InvalidArgument(message, violations, reason=reason, metadata=metadata)
    else:
        narrower = _NARROWER.get(reason)
        if narrower is not None and issubclass(narrower, cls):
            cls = narrower
        found = cls(message, reason=reason, metadata=metadata)
    found.code = code
    return found


def _with_tls_trouble(details: str) -> str:
    """grpc's words for a connection it could not open, after what went wrong with its TLS when
    that is why. Only this client's own failure to connect: a server's UNAVAILABLE (a proxy's
    about its upstream's certificate) is passed on as it came."""
    if not dial_failed(details):
        return details
    trouble = tls_trouble(details)
    if trouble is not None:
        return f"cannot open TLS to the server: {trouble}; grpc: {details}"
    if "socket closed" in details.lower():  # it took each connection and dropped it: grpc says no more
        return f"cannot open a connection to the server: {_CLOSED_AT_ONCE}; grpc: {details}"
    return details


_CLOSED_AT_ONCE = (
    "it closed each connection as it was opened (a server serving TLS to a client dialling plaintext: "
    "connect(ca_file=...), or tls=True; a server asking for a client certificate (mutual TLS): "
    "connect(cert_file=..., key_file=...); or a server stopping)"
)
"""grpc's client says only "Socket closed" for all three; telling them apart would take a probe of the
server, which the command line makes (``stigmer backend status``) and a library's error should not."""
