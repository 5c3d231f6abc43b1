"""What a server may listen on, and how a client reaches one without leaking its token.

A server on a loopback address is the local daemon and needs nothing. One
on any other address is reachable by others: it must have TLS and require
authentication, or be told ``insecure_no_auth`` (a trusted mesh that does
both for it). The check runs before anything is bound, so a refused start
opens no port at all.

A client never sends a token in clear to a non-loopback address: such an
endpoint is dialled with TLS (grpc's default roots, or a CA file), and a
channel that would be plaintext is refused instead.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs
import grpc

from stigmer_core.errors import InsecureTransport, StartupError


def split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) can only be reached from this machine."""
    if address.startswith("unix:"):
        return True
    for host in (address.strip("[]"), split_address(address)[0]):
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            continue
    return False  # a name: it may resolve to anything


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the {what} {path}: {exc.strerror}") from exc


@attrs.frozen
class TlsFiles:
    """PEM files of a server's certificate, its key, and optionally the CA its clients' certificates need."""

    cert: str
    key: str
    client_ca: str | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        client_ca = _read(self.client_ca, "client CA file (--tls-client-ca)") if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(_read(self.key, "TLS key (--tls-key)"), _read(self.cert, "TLS certificate (--tls-cert)"))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


def check_listen(address: str, *, tls: TlsFiles | None, require_auth: bool, insecure_no_auth: bool) -> None:
    """Refuse to serve a non-loopback address without TLS and authentication, saying what to configure."""
    if is_loopback(address) or insecure_no_auth or (tls is not None and require_auth):
        return
    lacking = [
        what
        for what, missing in (
            ("TLS (--tls-cert FILE --tls-key FILE)", tls is None),
            ("authentication (--require-auth, with tokens from `stigmer token create`)", not require_auth),
        )
        if missing
    ]
    raise InsecureTransport(
        f"refusing to listen on {address}: it is reachable from other machines, and the server has no "
        f"{' and no '.join(lacking)}. Configure them (or the `server:` section of the config file), "
        "listen on 127.0.0.1, or pass --insecure-no-auth on a network that authenticates and encrypts for you"
    )


def client_credentials(ca_file: str | None) -> grpc.ChannelCredentials:
    root = _read(ca_file, "CA file (--ca-file)") if ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=root)


def refuse_plaintext_token(target: str) -> None:
    if not is_loopback(target):
        raise InsecureTransport(
            f"refusing to send a token to {target} over a plaintext channel: use TLS "
            "(the default for a non-loopback endpoint; give --ca-file for a private CA)"
        )
