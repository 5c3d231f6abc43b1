"""What a server may listen on, and how a client reaches one without leaking its token.

A server on a loopback address is the local daemon and needs nothing. One
on any other address is reachable by others: it must have TLS and require
authentication, or be told ``insecure_no_auth`` (a trusted mesh that does
both for it). The check runs before anything is bound, so a refused start
opens no port at all.

A server's certificate files are read again when they change (a renewal by
cert-manager or an ACME client), so a long-running team server never serves
an expired certificate that was renewed on disk: new connections get the new
one, open ones keep theirs, and files that do not form a pair yet (one
written, not the other) leave the previous ones in use.

A client never sends a token in clear to a non-loopback address: such an
endpoint is dialled with TLS (grpc's default roots, or a CA file), and a
channel that would be plaintext is refused instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import attrs
import grpc

from stigmer_core.errors import InsecureTransport, StartupError

log = logging.getLogger(__name__)


def split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def listen_address_problem(address: str) -> str | None:
    """Why ``address`` is no ``HOST:PORT`` to listen on, or None (port 0 picks a free one)."""
    host, port = split_address(address)
    if not host or not port.isdigit() or int(port) > 65535:
        return "give HOST:PORT (a port from 0 to 65535), as 127.0.0.1:9464"
    return None


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) can only be reached from this machine."""
    if address.startswith("unix:"):
        return True
    for host in (address.strip("[]"), split_address(address)[0]):
        if host.lower() == "localhost":  # names are case-blind: LOCALHOST is this machine too
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1 (Python 3.11 says no)
        return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
    return False  # a name: it may resolve to anything


_GRPC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
"""The elliptic curves grpc's TLS (BoringSSL) serves a key on; Python's ssl takes more (secp256k1)."""

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")


class _EncryptedKey(Exception):
    """Raised for OpenSSL's pass-phrase callback: the server never asks for one."""


def _no_pass_phrase() -> str:
    """Given to ``load_cert_chain`` so an encrypted key is refused: without it OpenSSL prompts on
    the terminal, where a daemon's start (or, at a renewal, every new handshake) waits forever."""
    raise _EncryptedKey


def _key_type_refusal(key: bytes, cert: bytes) -> str | None:
    """What keeps grpc's TLS from serving a key Python's ssl takes, in words; None when it serves
    it (or the key is not one cryptography reads, which ssl's own check then describes).

    ssl takes more than grpc (BoringSSL) serves: a curve such as secp256k1, and a certificate of an
    RSA-PSS key, which grpc refuses outright (at a renewal, silently: the old pair stayed served).
    An Ed25519 key grpc serves, but grpc's own clients offer no Ed25519 signature, so the CLI
    and the SDKs could not connect at all ("Socket closed")."""
    from cryptography import x509  # here: a client on a plaintext channel reads no certificate
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import PublicKeyAlgorithmOID

    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except (ValueError, IndexError):
        leaf = None
    if leaf is not None and leaf.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        return "an RSA-PSS key (its certificate's key is id-RSASSA-PSS)"
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (TypeError, ValueError, UnsupportedAlgorithm):  # encrypted, or not a key it reads: ssl's check says
        return None
    if isinstance(private, ec.EllipticCurvePrivateKey):
        curve = private.curve.name
        return None if curve in _GRPC_CURVES else f"an ECDSA key on curve {curve}"
    if isinstance(private, rsa.RSAPrivateKey):
        return None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key, which grpc's own clients (this CLI, the Python and C++ SDKs) cannot verify"
    return f"a {type(private).__name__.removeprefix('_').replace('PrivateKey', '')} key"


def _validity(cert: bytes) -> tuple[datetime.datetime, datetime.datetime] | None:
    """The server certificate's (the chain's first) validity, or None when cryptography cannot read it."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except (ValueError, IndexError):
        return None
    return leaf.not_valid_before_utc, leaf.not_valid_after_utc


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the {what} {path}: {exc.strerror}") from exc


Served = Callable[[datetime.datetime | None], None]
"""Told when the certificate served to new connections expires (None: its dates cannot be read)."""


@attrs.frozen
class TlsFiles:
    """PEM files of a server's certificate, its key, and optionally the CA its clients' certificates need."""

    cert: str
    key: str
    client_ca: str | None = None

    def server_credentials(self, served: Served | None = None) -> grpc.ServerCredentials:
        """Credentials that follow the files: grpc asks before every new connection's handshake.
        ``served`` is told when the certificate served to new connections expires, now and at each
        renewal taken (a daemon's metric of it)."""
        stamp = self._stamp()
        config = self._configuration()
        return grpc.dynamic_ssl_server_credentials(
            config, _Renewals(self, stamp, served), require_client_authentication=self.client_ca is not None
        )

    def _paths(self) -> list[Path]:
        return [Path(p).expanduser() for p in (self.cert, self.key, self.client_ca) if p]

    def _stamp(self) -> tuple[tuple[int, int, int, int], ...]:
        """What changes when a file is rewritten or a symlink swapped (a Kubernetes secret volume)."""
        stamps = []
        for path in self._paths():
            try:
                st = path.stat()
            except OSError:
                stamps.append((0, 0, 0, 0))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        return tuple(stamps)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files as grpc takes them, once they are a certificate and its key (StartupError saying what is wrong)."""
        key = _read(self.key, "TLS key (--tls-key)")
        cert = _read(self.cert, "TLS certificate (--tls-cert)")
        client_ca = _read(self.client_ca, "client CA file (--tls-client-ca)") if self.client_ca else None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(
                os.fspath(Path(self.cert).expanduser()), os.fspath(Path(self.key).expanduser()), password=_no_pass_phrase
            )
        except _EncryptedKey:
            raise StartupError(
                f"the TLS key {self.key} is encrypted, and the server asks for no pass phrase: give it the key "
                f"decrypted (`openssl pkey -in {self.key} -out server.key`), readable by the server's user only"
            ) from None
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise StartupError(
                f"the TLS certificate {self.cert} and key {self.key} are not a PEM certificate and its key: {exc}"
            ) from exc
        unserved = _key_type_refusal(key, cert)
        if unserved is not None:
            raise StartupError(
                f"the TLS key {self.key} is {unserved}; grpc's TLS serves an RSA key (rsaEncryption) or an "
                "ECDSA key on P-256, P-384 or P-521"
            )
        if client_ca is not None:
            blocks = _PEM_CERTIFICATE.findall(client_ca)  # text around them may be anything (curl's bundle: UTF-8 names)
            try:
                if not blocks:
                    raise ValueError("no -----BEGIN CERTIFICATE----- block")
                context.load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
            except (ssl.SSLError, ValueError) as exc:
                raise StartupError(f"the client CA file {self.client_ca} holds no PEM certificate: {exc}") from exc
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def dates_problem(self, now: datetime.datetime | None = None) -> tuple[bool, str] | None:
        """Why clients will refuse the certificate for its dates, if they will: (True, why) when it
        has expired, (False, why) when it is not valid yet (a clock behind, or a renewal early)."""
        try:
            dates = _validity(_read(self.cert, "TLS certificate (--tls-cert)"))
        except StartupError:
            return None
        if dates is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        begins, ends = dates
        if ends < now:
            return True, f"the TLS certificate {self.cert} expired at {ends:%Y-%m-%d %H:%M:%S} UTC: clients refuse it"
        if begins > now:
            return False, (
                f"the TLS certificate {self.cert} is not valid before {begins:%Y-%m-%d %H:%M:%S} UTC: clients "
                "refuse it until then (is this machine's clock right?)"
            )
        return None


class _Renewals:
    """grpc's certificate fetcher: a new configuration when the files changed and form a valid one.

    A renewal not valid yet (staged early, or signed by a machine whose clock runs ahead) is
    taken only once it is, while the certificate served is still good: served at once, every
    new connection's client refused it until its start."""

    def __init__(
        self, files: TlsFiles, stamp: tuple[tuple[int, int, int, int], ...], served: Served | None = None
    ) -> None:
        self._files = files
        self._served = stamp
        self._refused = stamp
        self._retry_at: datetime.datetime | None = None
        """When a renewal deferred for its start date is looked at again."""
        self._served_until = _dates(files)[1]
        self._told = served
        self._lock = threading.Lock()
        self._tell()

    def _tell(self) -> None:
        if self._told is not None:
            self._told(self._served_until)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._files._stamp()
            if stamp == self._served:
                return None  # a stat per new connection; nothing read
            now = datetime.datetime.now(datetime.UTC)
            if stamp == self._refused and (self._retry_at is None or now < self._retry_at):
                return None
            self._retry_at = None
            try:
                config = self._files._configuration()
                dated = self._files.dates_problem(now)
                if dated is not None and dated[0]:  # an expired renewal: the one served may still be good
                    raise StartupError(dated[1])
            except StartupError as exc:
                self._refused = stamp  # said once per change of the files
                log.warning("TLS files changed but cannot be served yet; new connections keep the previous ones: %s", exc)
                return None
            if dated is not None and self._served_until is not None and now < self._served_until:
                begins = _dates(self._files)[0]
                if begins is not None:
                    self._refused, self._retry_at = stamp, begins
                    log.warning(
                        "TLS: %s; new connections keep the certificate served, valid until %s UTC, until then",
                        dated[1],
                        f"{self._served_until:%Y-%m-%d %H:%M:%S}",
                    )
                    return None
            if self._files._stamp() != stamp:
                return None  # rewritten while read: take them at the next connection
            self._served = stamp
            self._served_until = _dates(self._files)[1]
            self._tell()
            log.info("TLS: serving the certificate renewed in %s", self._files.cert)
            if dated is not None:
                log.warning("TLS: %s", dated[1])
            return config


def _dates(files: TlsFiles) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The certificate file's validity, from and to; (None, None) when it cannot be read."""
    try:
        return _validity(_read(files.cert, "TLS certificate (--tls-cert)")) or (None, None)
    except StartupError:
        return None, None


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
        "or listen on 127.0.0.1. (--insecure-no-auth lifts this refusal, for a network that encrypts and "
        "authenticates for you; without --require-auth every caller is then administrator of every org.)"
    )


def client_credentials(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials of a client: a private CA to trust (else grpc's default roots) and, for a
    server started with ``--tls-client-ca`` (mutual TLS), the client's own certificate and key."""
    if bool(cert_file) != bool(key_file):
        raise StartupError(
            "a client certificate needs both files: give --cert-file FILE and --key-file FILE "
            "(or remote.cert_file and remote.key_file; connect()'s cert_file and key_file)"
        )
    # each comes from a flag, the environment, the config file or connect()'s argument: the words name all four
    root = _read(ca_file, "CA file (--ca-file, $STIGMER_CA_FILE, remote.ca_file or ca_file=)") if ca_file else None
    cert = (
        _read(cert_file, "client certificate (--cert-file, $STIGMER_CERT_FILE, remote.cert_file or cert_file=)")
        if cert_file
        else None
    )
    key = (
        _read(key_file, "client key (--key-file, $STIGMER_KEY_FILE, remote.key_file or key_file=)") if key_file else None
    )
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""What an HTTP/2 client sends first (the preface, then an empty SETTINGS frame): a grpc server answers it."""


def asks_client_certificate(address: str, timeout: float = 3.0) -> bool:
    """Whether the TLS server at ``address`` closes connections that bring no client certificate.

    grpc reports such a refusal as "Socket closed", the same words as plaintext dialled to a TLS
    server: this asks the server itself, once a call has failed so. A TLS handshake without a
    client certificate, then the HTTP/2 preface: a server that answers it does not ask for one,
    one that closes the connection (or alerts "certificate required") does.
    """
    import socket

    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only what the server asks is looked at; nothing is sent but the preface
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(_HTTP2_PREFACE)
            return tls.recv(9) == b""
    except ssl.SSLError as exc:
        return "certificate" in str(exc).lower() and "required" in str(exc).lower()
    except (OSError, ValueError):
        return False


def usable_token(token: str) -> str:
    """``token`` without surrounding blanks (a pasted line break), or StartupError: a header value
    carries only visible ASCII, and grpc would refuse the call with "Invalid metadata"."""
    cleaned = token.strip()
    bad = next((c for c in cleaned if not "!" <= c <= "~"), None)
    if bad is not None:
        raise StartupError(
            f"the API token holds {bad!r}, which a request header cannot carry; give the token as "
            "`stigmer token create` printed it"
        )
    return cleaned


def refuse_plaintext_token(target: str) -> None:
    if not is_loopback(target):
        raise InsecureTransport(
            f"refusing to send a token to {target} over a plaintext channel: use TLS "
            "(the default for a non-loopback endpoint; give --ca-file for a private CA)"
        )
