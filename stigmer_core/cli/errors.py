"""Turning any failure into the one line a person reads.

Every command fails the same way: ``stigmer: <what went wrong>`` on stderr
and a non-zero exit; ``--verbose`` adds the details (field violations, the
gRPC status, the traceback) underneath. Server errors arrive as the
framework's exception tree (``from_rpc_error``), so their messages are
already written for people; this module adds the client-side cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

    from stigmer_core.errors import StigmerError


_EMPTY = re.compile(r"\bmust (?:be|have) at least 1 (?:characters?|items?|bytes?|pairs?)\b")
_ONE = re.compile(r"\b((?:at (?:least|most)|exactly) 1) (character|item|byte|pair)s\b")


def wording(text: str) -> str:
    """A validator's phrase as a person would say it: ``must not be empty``, ``at most 1 item``."""
    return _ONE.sub(r"\1 \2", _EMPTY.sub("must not be empty", text))


class CliError(Exception):
    """A failure reported as one line, with optional details for ``--verbose``."""

    def __init__(self, message: str, *, details: Sequence[str] = (), exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.details = tuple(details)
        self.exit_code = exit_code


RESTART_HINT = (
    "a server serves the kinds installed when it started: after installing a kind's package, restart it; "
    "the local daemon with `stigmer local stop`, then `stigmer local start`"
)


class Unreachable(CliError):
    """The server cannot be reached (or no TLS opened to it, or it did not answer in time): every
    later call would fail the same way, so a command working through many documents stops here,
    where any other failure is one document's."""

    def __init__(self, message: str, *, details: Sequence[str] = (), target: str = "", gone: str = "") -> None:
        super().__init__(message, details=details)
        self.target = target
        self.gone = gone
        """``REFUSED`` or ``LOST`` when nothing answers at ``target`` (a server that stopped), else ""."""
        self.dialled_by_command = False
        """Whether the command named the server itself (`login --endpoint`): then it is never the
        configured local daemon's, whatever the backend."""


REFUSED = "refused"
LOST = "lost"


def at_local_daemon(error: Unreachable, data_dir: str, flag: str) -> Unreachable:
    """``error`` said of the local daemon holding ``data_dir`` (``flag``: ``--data-dir DIR`` when
    commands need it to find that directory), not of a remote server: its hint was a remote
    backend's (`backend status --backend remote`), which a local user has no use for."""
    if not error.gone:
        return error
    lost = ": the connection was lost" if error.gone == LOST else ""
    return Unreachable(
        f"cannot reach the local stigmer daemon of data directory {data_dir} at {error.target}{lost} "
        f"(did the daemon stop? `stigmer local status{flag}` checks it, `stigmer local start{flag}` starts it "
        "again; with none running, commands open the store themselves)",
        details=error.details,
    )


def _unreachable(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in ("failed to connect", "connection refused", "dns resolution", "unavailable"))


def _unresolved(details: str) -> bool:
    """grpc's words for a host name its resolver could not look up (c-ares' and the native one's)."""
    lowered = details.lower()
    return "errors resolving" in lowered or "dns resolution failed" in lowered


_LOST = ("stream removed", "socket closed", "connection reset", "broken pipe", "goaway", "endpoint closing")
"""grpc's words for a connection that was open and broke (a daemon that stopped under a watch or an
import), as opposed to a status the server sent."""


def _lost(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in _LOST)


CLIENT_CERTIFICATE_WANTED = "the server asks for a client certificate: give --cert-file and --key-file"
"""Why a mutual-TLS server closed the connection (``backend status`` says it too)."""
CA_WANTED_TOO = " and its CA with --ca-file (a loopback address without one is dialled in plaintext)"
"""Added when this process dialled that server in plaintext (``client.dialled_in_plaintext``)."""


def tls_trouble(details: str) -> str | None:
    """What went wrong setting up TLS, in a person's words naming the command's flags, when that is
    why a call failed (``stigmer_core.tls_trouble``, which ``from_rpc_error`` words for Python)."""
    from stigmer_core.tls_trouble import TlsNames
    from stigmer_core.tls_trouble import tls_trouble as worded

    names = TlsNames(ca="--ca-file or $STIGMER_CA_FILE", files="the CA file, or the client certificate and key")
    return worded(details, names)


def _asks_client_certificate(target: str) -> bool:
    """Whether the server at ``target`` closes connections for want of a client certificate
    (``transport.asks_client_certificate``); never for the local daemon's Unix socket."""
    from stigmer_core.auth.transport import asks_client_certificate, split_address

    host, port = split_address(target)
    if not host or not port.isdigit():
        return False
    return asks_client_certificate(target)


def _sent_by_stigmer(error: grpc.RpcError) -> bool:
    """Whether a stigmer server sent this status (every refusal it sends carries an ``ErrorInfo`` of
    its domain): its UNAVAILABLE "the database is unreachable: ... connection refused" is the
    database's trouble, told by a server that was reached, not a server this client cannot reach."""
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from stigmer_core.errors import DOMAIN

    if not isinstance(error, grpc.Call):
        return False
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status line: not a stigmer server's
        return False
    if status is None:
        return False
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return True
    return False


def from_rpc(error: grpc.RpcError, target: str) -> Exception:
    """The error a failed call stands for; an unreachable server gets a message of its own."""
    import grpc

    from stigmer_core.status import from_rpc_error

    code = error.code() if isinstance(error, grpc.Call) else None
    raw = (error.details() if isinstance(error, grpc.Call) else "") or str(error)
    if _sent_by_stigmer(error):  # the server answered: its words are its own, never a connection's trouble
        return from_rpc_error(error)
    from stigmer_core.tls_trouble import dial_failed

    # only this client's own failure to connect: a proxy's UNAVAILABLE about its upstream's
    # certificate is the proxy's trouble, not a file of this command's
    trust = tls_trouble(raw) if code == grpc.StatusCode.UNAVAILABLE and dial_failed(raw) else None
    if trust is not None:
        return Unreachable(f"cannot open TLS to the stigmer server at {target}: {trust}", details=[raw])
    if code == grpc.StatusCode.UNAVAILABLE and _unresolved(raw):
        return Unreachable(
            f"cannot reach the stigmer server at {target}: its host name does not resolve (check the endpoint: "
            "--endpoint, $STIGMER_ENDPOINT or remote.endpoint, and this machine's DNS)",
            details=[raw],
        )
    if code == grpc.StatusCode.UNAVAILABLE and _unreachable(raw):
        closed = "socket closed" in raw.lower()  # it took the connection, then dropped it: TLS met plaintext?
        if closed and _asks_client_certificate(target):
            from stigmer_core.client import dialled_in_plaintext

            return Unreachable(
                f"cannot open TLS to the stigmer server at {target}: {CLIENT_CERTIFICATE_WANTED}"
                f"{CA_WANTED_TOO if dialled_in_plaintext(target) else ''} "
                "(or $STIGMER_CERT_FILE and $STIGMER_KEY_FILE, or remote.cert_file and remote.key_file), "
                "of a certificate signed by a CA the server trusts; one given here was refused if it has "
                "expired or another CA signed it",
                details=[raw],
            )
        return Unreachable(
            f"cannot reach the stigmer server at {target} (is it running? "
            + ("if it serves TLS, give its CA with --ca-file or $STIGMER_CA_FILE; " if closed else "")
            + f"`stigmer backend status --backend remote --endpoint {target}` checks that address)",
            details=[raw],
            target=target,
            gone=REFUSED,
        )
    if code == grpc.StatusCode.UNAVAILABLE and _lost(raw):  # a stream (a watch) whose server went away
        return Unreachable(
            f"cannot reach the stigmer server at {target}: the connection was lost (did the server stop? "
            f"`stigmer backend status --backend remote --endpoint {target}` checks that address)",
            details=[raw],
            target=target,
            gone=LOST,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the next call would wait as long: a cut-off too
        return Unreachable(f"the stigmer server at {target} did not answer in time", details=[raw])
    if code == grpc.StatusCode.UNIMPLEMENTED:
        if raw.startswith("Method not found"):  # grpc's own words: no kind there has the method
            return CliError(f"the stigmer server at {target} has no such method ({RESTART_HINT})", details=[raw])
        return CliError(f"the stigmer server at {target} does not serve this call: {raw}")
    return from_rpc_error(error)


def violation_lines(error: BaseException) -> list[str]:
    from stigmer_core import errors

    if isinstance(error, errors.InvalidArgument):
        return [f"{v.field}: {wording(v.description)}" for v in error.violations]
    return []


def status_line(error: StigmerError) -> str:
    """What a client in another language would match on: the gRPC status, the reason and its
    metadata (docs/design.md, Reasons), for ``-v`` (the one line says it in words): the code the
    call ended with, which a bare ``StigmerError`` does not tell (UNKNOWN, CANCELLED, INTERNAL)."""
    found = ", ".join(f"{key}={value}" for key, value in sorted(error.metadata.items()))
    return f"status {error.code.name}, reason {error.reason}" + (f" ({found})" if found else "")


def describe(error: BaseException) -> tuple[str, list[str]]:
    """(one-line message, detail lines) for any error a command raised."""
    from stigmer_core import errors  # here: `stigmer --help` would pay for attrs, which errors' classes use

    if isinstance(error, CliError):
        return error.message, list(error.details)
    if isinstance(error, errors.StigmerError):
        return wording(error.message), [*violation_lines(error), status_line(error)]
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", []
    return f"unexpected error: {type(error).__name__}: {error}", []
