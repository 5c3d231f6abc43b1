"""Why a client's TLS could not be set up, in a person's words, from grpc's text for it.

grpc reports a client's TLS failure as UNAVAILABLE in OpenSSL's words ("Tls handshake failed
(TSI_PROTOCOL_FAILURE): ... certificate signature failure"), which send people looking at the
server when the fix is nearly always a file or an argument of the client's. The command line
(``cli.errors``) and ``status.from_rpc_error`` say it alike, each naming the settings its own
user gives; standard library only, since the command line imports it as it starts.
"""

from __future__ import annotations

from typing import NamedTuple


class TlsNames(NamedTuple):
    """How a client's TLS settings are given where the advice is read, so it names them as that
    reader gives them (flags for the command line, arguments for a Python program)."""

    ca: str
    """Where to give the CA that signed the server's certificate."""
    files: str
    """The client's TLS files, as the subject of "could not be used"."""


CONNECT_NAMES = TlsNames(
    ca="connect(ca_file=...)",
    files="the CA file (ca_file=), or the client certificate and key (cert_file=, key_file=)",
)
"""``stigmer_core.connect()``'s arguments."""


def tls_trouble(details: str, names: TlsNames = CONNECT_NAMES) -> str | None:
    """What went wrong setting up TLS, in a person's words, when that is why a call failed."""
    lowered = details.lower()
    if "hostname verification" in lowered:
        return "its certificate does not name the host dialled (use a name or address the certificate holds)"
    if "certificate has expired" in lowered:
        return "its certificate has expired (the server needs its renewed certificate)"
    if "certificate is not yet valid" in lowered:
        return "its certificate is not valid yet (is this machine's clock right, or the server's?)"
    untrusted = (
        "certificate_verify_failed",
        "certificate verify failed",
        "certificate signature failure",
        "unknown ca",
    )
    if any(words in lowered for words in untrusted) or "unable to get local issuer" in lowered:
        return (
            f"its certificate is not signed by a CA this client trusts (give the CA that signed it with {names.ca}: "
            "if a CA file was given, it did not sign it)"
        )
    if "security handshaker" in lowered or "ssl_ctx" in lowered:
        return f"{names.files}, could not be used (are they PEM files, and is the key the certificate's?)"
    if "handshake" in lowered and ("ssl" in lowered or "tls" in lowered):
        return "the TLS handshake failed (does the server serve TLS, and with a certificate this client trusts?)"
    return None


_DIAL_FAILED = ("failed to connect to all addresses", "connections to all backends failing")
"""How grpc's client begins the status it makes when no connection to the target could be opened
(pick_first's words, then round_robin's), a failed TLS handshake among them."""


def dial_failed(details: str) -> bool:
    """Whether this client's own grpc made the status, failing to connect. A status a server sent
    begins otherwise, so a proxy's UNAVAILABLE telling of its own upstream's certificate
    ("upstream connect error ... CERTIFICATE_VERIFY_FAILED") is not taken for this client's."""
    return details.lower().startswith(_DIAL_FAILED)
