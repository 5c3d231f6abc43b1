"""Principals, tokens, certificates and seeded orgs for the authentication and isolation tests."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stigmer_core import Application
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.client import TokenInterceptor
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from tests import workflow_helpers as wf
from tests.agent_execution_support import Kinds

ALPHA, BETA = "alpha", "beta"


@contextlib.contextmanager
def requiring_tokens(path: Path, store: str | None = None) -> Iterator[Application]:
    """An application whose network calls must carry a token (a team server's), in ``path``;
    on ``store`` (a PostgreSQL URL, as ``Application.open`` takes it) or LMDB."""
    app = Application.open(path / "data", store=store, durable=False, require_auth=True)
    try:
        yield app
    finally:
        app.close()


@contextlib.contextmanager
def served(app: Application, max_workers: int = 8) -> Iterator[Server]:
    """``app`` on an ephemeral loopback port."""
    server = Server(app, "127.0.0.1:0", max_workers=max_workers)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    return grpc.intercept_channel(channel, TokenInterceptor(token))


def make_token(app: Application, org: str, role: str, name: str = "") -> tuple[str, Any]:
    """(token, its ApiToken as created) made in-process by the local administrator."""
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    made = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role=role))
    made.metadata.name = name or f"{org} {role}"
    made.metadata.org = org
    created: Any = tokens.create(made)
    return created.status.token, created


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            next(result, None)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@attrs.frozen
class Seeded:
    """One object of every first-party kind in an org: kind name -> object."""

    org: str
    objects: dict[str, Any]

    def ids(self) -> set[str]:
        return {o.metadata.id for o in self.objects.values()}


def seed_org(app: Application, org: str) -> Seeded:
    """As the local administrator: an object of every first-party kind in ``org``."""
    channel = app.channel()
    kinds = Kinds.on(app, channel)
    env = kinds.environment("env", {"DB_PASSWORD": (f"secret-of-{org}", True), "REGION": ("eu", False)}, org=org)
    agent: Any = kinds.agents.create(_agent(org, env.metadata.slug))
    instance_id = agent.status.default_instance_id
    session: Any = kinds.session(instance_id, "chat", org=org)
    execution: Any = kinds.execution("run", session_id=session.metadata.id, org=org)
    context = kinds.contexts.get(execution.status.execution_context_id)
    skills = KindClient(channel, app.registry.kind("Skill"))
    skill = skills.create(
        skill_pb2.Skill(
            metadata=metadata_pb2.ApiResourceMetadata(name="calc", org=org),
            spec=skill_pb2.SkillSpec(skill_md="# Calc\nAdds numbers.\n", description="adds", tag="v1"),
        )
    )
    workflows = KindClient(channel, app.registry.kind("Workflow"))
    workflow: Any = workflows.create(wf.workflow("Triage", org=org))
    wf_instances = KindClient(channel, app.registry.kind("WorkflowInstance"))
    wf_instance = wf_instances.get(workflow.status.default_instance_id)
    wf_executions = KindClient(channel, app.registry.kind("WorkflowExecution"))
    wf_execution = wf_executions.create(wf.execution("go", workflow_id=workflow.metadata.id, org=org))
    _, token = make_token(app, org, "viewer", f"seed {org}")
    objects = {
        "Environment": env,
        "Agent": agent,
        "AgentInstance": kinds.instances.get(instance_id),
        "Session": session,
        "AgentExecution": execution,
        "ExecutionContext": context,
        "Skill": skill,
        "Workflow": workflow,
        "WorkflowInstance": wf_instance,
        "WorkflowExecution": wf_execution,
        "ApiToken": token,
    }
    return Seeded(org, objects)


def _agent(org: str, env_slug: str) -> Any:
    from stigmer_core.api.agentic.agent.v1 import agent_pb2

    agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name="bot", org=org))
    agent.spec.description = "answers"
    agent.spec.instructions = "be kind"
    agent.spec.environment_refs.add(slug=env_slug)
    return agent


# -- certificates -------------------------------------------------------------------


@attrs.frozen
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def make_pki(
    directory: Path,
    *,
    server_curve: ec.EllipticCurve | None = None,
    server_valid: tuple[datetime.timedelta, datetime.timedelta] | None = None,
) -> Pki:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, all signed by it.
    ``server_curve``: the server key's (P-256 otherwise); ``server_valid``: its certificate's
    validity, from and to, as offsets from now (5 minutes ago to a day on otherwise)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("stigmer test CA"))
        .issuer_name(_name("stigmer test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common: str,
        san: list[x509.GeneralName],
        curve: ec.EllipticCurve | None = None,
        valid: tuple[datetime.timedelta, datetime.timedelta] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(curve or ec.SECP256R1())
        begins, ends = valid or (-datetime.timedelta(minutes=5), datetime.timedelta(days=1))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + begins)
            .not_valid_after(now + ends)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    server, server_key = leaf(
        "localhost",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        server_curve,
        server_valid,
    )
    client, client_key = leaf("runner-1", [x509.DNSName("runner-1")])
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.server_key, server_key)
    _write_key(pki.client_key, client_key)
    return pki
