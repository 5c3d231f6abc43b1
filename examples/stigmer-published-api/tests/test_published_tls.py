"""The official SDK, unchanged, against a team server: TLS, a real API token,
its org's walls. The SDK trusts grpc's default roots, so the client runs in a
process of its own whose roots are the test's CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stigmer_core import Application
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.auth.transport import TlsFiles
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server

pytestmark = pytest.mark.timeout(60)

_CLIENT = """
import json, sys
from stigmer import AgentInput, ResourceRef, StigmerClient, StigmerError

address, token = sys.argv[1], sys.argv[2]
out = {}
with StigmerClient(token, base_url=address) as client:
    made = client.agents.create(AgentInput(name="Support Bot", org="acme", instructions="Answer kindly, always."))
    out["created"] = [made.metadata.org, made.metadata.slug]
    out["fetched"] = client.agents.get_by_reference(ResourceRef(org="acme", slug="support-bot")).metadata.id == made.metadata.id
    try:
        client.agents.create(AgentInput(name="Elsewhere", org="beta", instructions="Answer kindly, always."))
        out["other_org"] = "created"
    except StigmerError as exc:
        out["other_org"] = exc.code.name
with StigmerClient("sk_not_a_token", base_url=address) as client:
    try:
        client.agents.get_by_reference(ResourceRef(org="acme", slug="support-bot"))
        out["bad_key"] = "answered"
    except StigmerError as exc:
        out["bad_key"] = exc.code.name
print(json.dumps(out))
"""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def build(subject: str, public: Any, *extensions: tuple[Any, bool]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name("test CA"))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = build("test CA", ca_key.public_key(), (x509.BasicConstraints(ca=True, path_length=None), True))
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server = build("127.0.0.1", key.public_key(), (san, False))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_the_sdk_with_a_token_over_tls(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    with Application.open(tmp_path / "data", durable=False, require_auth=True) as app:
        tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
        made = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role="editor"))
        made.metadata.name, made.metadata.org = "sdk", "acme"
        token = tokens.create(made).status.token  # type: ignore[attr-defined]
        server = Server(app, "127.0.0.1:0", max_workers=4, tls=TlsFiles(str(cert), str(key)))
        server.start()
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CLIENT, server.address, token],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(ca)},
            )
        finally:
            server.stop(grace=1)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "created": ["acme", "support-bot"],
        "fetched": True,
        "other_org": "NOT_FOUND",
        "bad_key": "UNAUTHENTICATED",
    }
