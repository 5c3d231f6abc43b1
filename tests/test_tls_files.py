"""A team server's certificate files as people get them wrong: each refused at start with a
message naming the file and the fix, never a prompt, a traceback or a misleading reason."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from stigmer_core import Application
from stigmer_core.auth.transport import TlsFiles
from stigmer_core.errors import StartupError
from stigmer_core.server import Server
from tests.auth_support import ALPHA, Pki, code_of, make_pki, make_token, with_token
from tests.test_auth import _handshake, _whoami

DAY = datetime.timedelta(days=1)
RSA_PSS = Path(__file__).parent / "tls_data"
"""A certificate of an RSA-PSS key (id-RSASSA-PSS) for localhost, valid for a century: cryptography
makes none, so it was made once with `openssl genpkey -algorithm RSA-PSS` and `openssl req -x509`."""


def _ed25519_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost of an Ed25519 key, and the key."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .sign(key, None)
    )
    cert_file, key_file = directory / "ed25519.pem", directory / "ed25519.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    """On LMDB alone: the files are the transport's, whatever the store."""
    app = Application.open(tmp_path / "data", durable=False, require_auth=True)
    yield app
    app.close()


def _encrypt(key_file: Path, to: Path, form: serialization.PrivateFormat) -> None:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    to.write_bytes(key.private_bytes(serialization.Encoding.PEM, form, serialization.BestAvailableEncryption(b"secret")))


@pytest.mark.parametrize("pkcs8", [False, True], ids=["traditional", "pkcs8"])
def test_an_encrypted_key_is_refused_at_start_without_asking_for_a_pass_phrase(
    app: Application, tmp_path: Path, pkcs8: bool
) -> None:
    """OpenSSL asked for the pass phrase on the terminal: a daemon started in one waited there
    forever, and one started without one exited with a bare "Invalid argument"."""
    pki = make_pki(tmp_path)
    locked = tmp_path / "locked.key"
    _encrypt(pki.server_key, locked, serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL)
    with pytest.raises(StartupError, match=f"the TLS key {locked} is encrypted.*openssl pkey"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(pki.server_cert), str(locked)))


def test_a_key_on_a_curve_grpc_does_not_serve_is_refused_naming_the_curve(app: Application, tmp_path: Path) -> None:
    """Python's ssl takes a secp256k1 key, grpc's TLS does not: the start said the address
    was in use."""
    pki = make_pki(tmp_path, server_curve=ec.SECP256K1())
    with pytest.raises(StartupError, match="ECDSA key on curve secp256k1; grpc's TLS serves an RSA key"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(pki.server_cert), str(pki.server_key)))


def test_an_ed25519_key_grpcs_clients_cannot_verify_is_refused_at_start(app: Application, tmp_path: Path) -> None:
    """grpc serves it, but its clients offer no Ed25519 signature: the daemon started, and every
    call of the CLI failed "cannot reach the server ... give its CA", with the CA given."""
    cert, key = _ed25519_pair(tmp_path)
    with pytest.raises(StartupError, match=f"the TLS key {key} is an Ed25519 key, which grpc's own clients"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(cert), str(key)))


def test_a_certificate_of_an_rsa_pss_key_is_refused_at_start_naming_it(app: Application) -> None:
    cert, key = RSA_PSS / "rsa-pss.pem", RSA_PSS / "rsa-pss.key"
    with pytest.raises(StartupError, match=r"is an RSA-PSS key.*grpc's TLS serves an RSA key \(rsaEncryption\)"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(cert), str(key)))


@contextlib.contextmanager
def _live_server(app: Application, tmp_path: Path) -> Iterator[tuple[Server, Path, Pki, str]]:
    """A server on a copy of a first pair in ``tmp_path/live`` (the files a renewal replaces), that
    pair's PKI, and a viewer's token; warnings of the transport captured from here on."""
    (tmp_path / "first").mkdir()
    (tmp_path / "live").mkdir()
    first, live = make_pki(tmp_path / "first"), tmp_path / "live"
    (live / "server.pem").write_bytes(first.server_cert.read_bytes())
    (live / "server.key").write_bytes(first.server_key.read_bytes())
    token, _ = make_token(app, ALPHA, "viewer")
    server = Server(app, "127.0.0.1:0", tls=TlsFiles(str(live / "server.pem"), str(live / "server.key")))
    server.start()
    try:
        yield server, live, first, token
    finally:
        server.stop(grace=1)


def _renew(live: Path, key: Path, cert: Path) -> None:
    """The live pair replaced, key first, each file at once (as a secret volume or certbot does)."""
    for name, source in (("server.key", key), ("server.pem", cert)):
        tmp = live / (name + ".new")
        tmp.write_bytes(source.read_bytes())
        os.replace(tmp, live / name)


@pytest.mark.parametrize("renewal", ["ed25519", "rsa-pss"])
def test_a_renewal_to_a_key_grpc_cannot_serve_keeps_the_one_served_and_says_so(
    app: Application, tmp_path: Path, caplog: pytest.LogCaptureFixture, renewal: str
) -> None:
    """grpc took an RSA-PSS renewal as served and refused it itself, saying nothing: new
    connections kept the old certificate, and it was never tried again. An Ed25519 one was
    served, and from then on no grpc client could connect."""
    cert, key = _ed25519_pair(tmp_path) if renewal == "ed25519" else (RSA_PSS / "rsa-pss.pem", RSA_PSS / "rsa-pss.key")
    with _live_server(app, tmp_path) as (server, live, first, token):
        caplog.set_level(logging.WARNING, logger="stigmer_core.auth.transport")
        _renew(live, key, cert)
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.OK
        said = "an Ed25519 key" if renewal == "ed25519" else "an RSA-PSS key"
        assert said in caplog.text and "cannot be served yet" in caplog.text


def test_a_client_ca_bundle_with_text_beside_its_certificates_is_taken(app: Application, tmp_path: Path) -> None:
    """curl's CA bundle names its issuers in UTF-8 between the blocks; grpc and openssl take
    it, and the server refused it as holding no certificate."""
    pki = make_pki(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("## Certificats de l'autorité: Česká, 東京\n\n".encode() + pki.ca.read_bytes())
    token, _ = make_token(app, ALPHA, "viewer")
    server = Server(app, "127.0.0.1:0", tls=TlsFiles(str(pki.server_cert), str(pki.server_key), str(bundle)))
    server.start()
    try:
        creds = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        with grpc.secure_channel(server.address, creds) as channel:
            assert code_of(lambda: _whoami(with_token(channel, token))) == grpc.StatusCode.OK
    finally:
        server.stop(grace=1)


def test_a_client_ca_file_without_a_certificate_is_still_refused(app: Application, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    empty = tmp_path / "notes.pem"
    empty.write_text("only words, no certificate\n")
    with pytest.raises(StartupError, match=f"the client CA file {empty} holds no PEM certificate"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(pki.server_cert), str(pki.server_key), str(empty)))


@pytest.mark.parametrize(
    ("valid", "said"),
    [((-2 * DAY, -DAY), "expired at"), ((DAY, 2 * DAY), "is not valid before")],
    ids=["expired", "not-yet-valid"],
)
def test_a_certificate_clients_refuse_for_its_dates_is_served_with_a_warning(
    app: Application,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    valid: tuple[datetime.timedelta, datetime.timedelta],
    said: str,
) -> None:
    """Served (a renewal may be on its way, taken without a restart), but said at start: every
    client's handshake fails, and nothing in the log said why."""
    pki = make_pki(tmp_path, server_valid=valid)
    caplog.set_level(logging.WARNING, logger="stigmer_core.server")
    server = Server(app, "127.0.0.1:0", tls=TlsFiles(str(pki.server_cert), str(pki.server_key)))
    try:
        assert f"the TLS certificate {pki.server_cert} {said}" in caplog.text
    finally:
        server.stop(grace=1)


def test_a_renewal_to_an_expired_certificate_keeps_the_one_served(
    app: Application, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "stale").mkdir()
    stale = make_pki(tmp_path / "stale", server_valid=(-2 * DAY, -DAY))
    with _live_server(app, tmp_path) as (server, live, first, token):
        caplog.set_level(logging.WARNING, logger="stigmer_core.auth.transport")
        _renew(live, stale.server_key, stale.server_cert)
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.OK
        assert "expired at" in caplog.text and "cannot be served yet" in caplog.text


def test_a_renewal_not_valid_yet_is_served_from_its_start_while_the_served_one_is_good(
    app: Application, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal staged early (or signed by a machine whose clock runs ahead) was served at once,
    and every new connection's client refused it until its start: an outage while the
    certificate it replaced was still good."""
    (tmp_path / "early").mkdir()
    starts_in = datetime.timedelta(seconds=3)
    early = make_pki(tmp_path / "early", server_valid=(starts_in, DAY))
    with _live_server(app, tmp_path) as (server, live, first, token):
        caplog.set_level(logging.WARNING, logger="stigmer_core.auth.transport")
        staged = datetime.datetime.now(datetime.UTC)
        _renew(live, early.server_key, early.server_cert)
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.OK
        assert "is not valid before" in caplog.text and "keep the certificate served" in caplog.text
        deadline = staged + starts_in + datetime.timedelta(seconds=30)
        while _handshake(server.address, early.ca, token) != grpc.StatusCode.OK:
            assert datetime.datetime.now(datetime.UTC) < deadline, "the renewal was never served"
            time.sleep(0.2)
        assert datetime.datetime.now(datetime.UTC) >= staged + starts_in - datetime.timedelta(seconds=1)


def test_the_served_certificates_expiry_is_a_metric_that_follows_renewals(app: Application, tmp_path: Path) -> None:
    """Nothing told an operator when the certificate served would expire: a renewal that never came
    showed only as clients refusing it. The daemon's metrics now carry it, renewals included."""
    from stigmer_core.metrics import Metrics

    def expiry(cert: Path) -> float:
        return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.timestamp()

    name = "stigmer_tls_certificate_expiry_timestamp_seconds"
    (tmp_path / "first").mkdir()
    (tmp_path / "later").mkdir()
    (tmp_path / "live").mkdir()
    first, live = make_pki(tmp_path / "first"), tmp_path / "live"
    later = make_pki(tmp_path / "later", server_valid=(-DAY, 3 * DAY))
    _renew(live, first.server_key, first.server_cert)
    token, _ = make_token(app, ALPHA, "viewer")
    metrics = Metrics(app.store)
    assert metrics.registry.get_sample_value(name) is None  # not before a TLS server serves
    files = TlsFiles(str(live / "server.pem"), str(live / "server.key"))
    server = Server(app, "127.0.0.1:0", tls=files, metrics=metrics)
    server.start()
    try:
        assert metrics.registry.get_sample_value(name) == expiry(first.server_cert)
        _renew(live, later.server_key, later.server_cert)
        assert _handshake(server.address, later.ca, token) == grpc.StatusCode.OK  # a new connection takes it
        assert metrics.registry.get_sample_value(name) == expiry(later.server_cert)
    finally:
        server.stop(grace=1)
