"""API tokens, TLS, refusing to be open, secrets only to runners, and the audit trail."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application, InsecureTransport, connect
from stigmer_core.api.agentic.skill.v1 import service_pb2_grpc as skill_grpc
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import event_pb2
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
from stigmer_core.api.iam.identity.v1 import identity_pb2, identity_pb2_grpc
from stigmer_core.auth.transport import TlsFiles, asks_client_certificate
from stigmer_core.denied_log import DeniedLog, seconds_from_env
from stigmer_core.errors import StartupError, Unauthenticated
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.resources import Resources
from stigmer_core.server import Server
from stigmer_core.store import keys
from tests.agent_execution_support import COMPLETED, IN_PROGRESS, Kinds
from tests.auth_support import ALPHA, BETA, code_of, make_pki, make_token, seed_org, with_token


@pytest.fixture
def app(tmp_path: Path, stigmer_store: str | None) -> Iterator[Application]:
    app = Application.open(tmp_path / "data", durable=False, require_auth=True, store=stigmer_store)
    yield app
    app.close()


def _whoami(channel: grpc.Channel) -> Any:
    stub: Any = identity_pb2_grpc.IdentityServiceStub
    return stub(channel).whoami(identity_pb2.WhoamiRequest(), timeout=5)


@contextmanager
def _refusals_logged(app: Application, caplog: Any) -> Iterator[grpc.Channel]:
    """A plain channel to a served ``app``, with the controller's refusal lines captured."""
    server = Server(app, "127.0.0.1:0", max_workers=2)
    server.start()
    try:
        with (
            grpc.insecure_channel(server.address) as plain,
            caplog.at_level(logging.WARNING, logger="stigmer_core.controller"),
        ):
            yield plain
    finally:
        server.stop(grace=1)


def _raw_store(app: Application) -> bytes:
    with app.store.read() as txn:
        return b"".join(key + value for key, value in txn.scan(b""))


def test_a_token_is_shown_once_and_only_its_digest_is_stored(app: Application) -> None:
    token, created = make_token(app, ALPHA, "editor", "ci")
    assert token.startswith("stg_") and len(token) > 40
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    shown: Any = tokens.get(created.metadata.id)
    assert shown.status.token == "" and shown.status.token_digest == ""
    listed: Any = tokens.list_page(org=ALPHA)
    assert [e.status.token for e in listed.entries] == [""]
    assert token.encode() not in _raw_store(app), "neither the object nor its event holds the token"
    whoami = _whoami(with_token(app.channel(), token))
    assert (whoami.principal, [(r.org, r.role) for r in whoami.roles]) == (f"token:{ALPHA}/ci", [(ALPHA, "editor")])
    assert _whoami(app.channel()).administrator, "in-process without a token: the local administrator"


def test_update_cannot_widen_a_token(app: Application) -> None:
    _, created = make_token(app, ALPHA, "viewer")
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    wider: Any = tokens.get(created.metadata.id)
    wider.spec.role = "admin"
    assert code_of(lambda: tokens.update(wider)) == grpc.StatusCode.INVALID_ARGUMENT


def test_writes_record_the_principal_in_audit_and_event(app: Application) -> None:
    token, _ = make_token(app, ALPHA, "editor", "deployer")
    kinds = Kinds.on(app, with_token(app.channel(), token))
    env: Any = kinds.environment("audited", {"A": ("1", False)})
    assert env.metadata.org == ALPHA, "a caller of one org creates in it"
    assert env.status.audit.spec_audit.created_by.id == f"token:{ALPHA}/deployer"
    with app.store.read() as txn:
        events = [event_pb2.ResourceEvent.FromString(raw) for _, raw in txn.events(0)]
    mine = [e for e in events if e.id == env.metadata.id]
    assert [e.principal for e in mine] == [f"token:{ALPHA}/deployer"]


def test_a_denied_call_is_one_log_line_without_the_request(app: Application, caplog: Any) -> None:
    token, _ = make_token(app, ALPHA, "viewer", "reader")
    kinds = Kinds.on(app, with_token(app.channel(), token))
    with caplog.at_level(logging.WARNING, logger="stigmer_core.controller"):
        assert code_of(lambda: kinds.environment("no", {"KEY": ("canary-7731", True)})) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"denied: principal=token:{ALPHA}/reader "
        "method=/stigmer.agentic.environment.v1.EnvironmentCommandController/create status=PERMISSION_DENIED"
        " peer=in-process"
    ]
    assert "canary-7731" not in caplog.text and token not in caplog.text
    (record,) = caplog.records  # the same as fields, for a JSON log (--log-format json)
    fields = {name: getattr(record, name, None) for name in ("principal", "method", "status", "peer", "left_out")}
    assert fields == {
        "principal": f"token:{ALPHA}/reader",
        "method": "/stigmer.agentic.environment.v1.EnvironmentCommandController/create",
        "status": "PERMISSION_DENIED",
        "peer": "in-process",
        "left_out": 0,
    }


def test_naming_an_org_the_caller_has_no_role_in_is_logged_as_a_refusal(app: Application, caplog: Any) -> None:
    """Answered NOT_FOUND, as an org that does not exist, it left no trace: an insider of one org
    could probe another's names unseen."""
    seed_org(app, BETA)
    token, _ = make_token(app, ALPHA, "admin", "prober")
    agents = KindClient(with_token(app.channel(), token), app.registry.kind("Agent"))
    with caplog.at_level(logging.WARNING, logger="stigmer_core.controller"):
        assert code_of(lambda: agents.list_page(org=BETA)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: agents.get_by_reference(org=BETA, slug="agent")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: agents.get_by_reference(org=ALPHA, slug="nothing-here")) == grpc.StatusCode.NOT_FOUND
        watch = watch_pb2_grpc.WatchStub(with_token(app.channel(), token))
        assert code_of(lambda: next(iter(watch.Watch(watch_pb2.WatchRequest(kind="Agent", org=BETA), timeout=10)))) == (
            grpc.StatusCode.NOT_FOUND
        )
    service = "/stigmer.agentic.agent.v1.AgentQueryController"
    assert [r.getMessage() for r in caplog.records] == [
        f"denied: principal=token:{ALPHA}/prober method={service}/list status=NOT_FOUND peer=in-process",
        f"denied: principal=token:{ALPHA}/prober method={service}/getByReference status=NOT_FOUND peer=in-process",
        f"denied: principal=token:{ALPHA}/prober method=/stigmer.commons.watch.v1.Watch/Watch status=NOT_FOUND"
        " peer=in-process",
    ], "an object missing from the caller's own org is no refusal; a stream's refusal is one line too"


def test_a_refused_whoami_is_one_log_line_too(app: Application, caplog: Any) -> None:
    """whoami is no kind rpc, yet its refusal logs the same line, naming the caller without its token."""
    token, _ = make_token(app, ALPHA, "viewer")
    forged = "stg_" + "A" * 43
    with _refusals_logged(app, caplog) as plain:
        assert code_of(lambda: _whoami(plain)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: _whoami(with_token(plain, forged))) == grpc.StatusCode.UNAUTHENTICATED
        assert _whoami(with_token(plain, token)).principal == f"token:{ALPHA}/{ALPHA}-viewer"
        twice = (("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}"))
        assert code_of(lambda: identity_pb2_grpc.IdentityServiceStub(plain).whoami(  # type: ignore[no-untyped-call]
            identity_pb2.WhoamiRequest(), metadata=twice, timeout=5
        )) == grpc.StatusCode.UNAUTHENTICATED  # fmt: skip
        assert code_of(lambda: _whoami(with_token(plain, "not-a-token"))) == grpc.StatusCode.UNAUTHENTICATED
    lines = [r.getMessage() for r in caplog.records if r.name == "stigmer_core.controller"]
    method = "/stigmer.iam.identity.v1.IdentityService/whoami"
    assert [line.split(" principal=")[0] for line in lines] == ["denied:"] * 4, "one per refusal, none more"
    assert lines[0].startswith("denied: principal=(anonymous ")
    assert f" method={method} status=UNAUTHENTICATED peer=ipv4:127.0.0.1:" in lines[0]
    assert lines[1].startswith(f"denied: principal=(invalid token) method={method} status=UNAUTHENTICATED peer=ipv4:")
    assert lines[2].startswith("denied: principal=(2 authorization entries) method="), "a valid token twice"
    assert lines[3].startswith("denied: principal=(malformed token) method="), lines[3]
    assert forged not in caplog.text and token not in caplog.text


def test_a_revoked_or_expired_token_is_named_in_its_refusal(app: Application, caplog: Any) -> None:
    """The reason to alert on refusals is a leaked token still in use after its revocation: the
    line said ``(invalid token)``, naming neither the token nor where the call came from."""
    kind = app.registry.kind("ApiToken")
    revoked, leaked = make_token(app, ALPHA, "viewer", "leaked")
    revoke = next(b for b in kind.methods.values() if b.operation == "revoke")
    KindClient(app.channel(), kind).call("revoke", revoke.request_cls(value=leaked.metadata.id))  # type: ignore[call-arg]
    expired, old = make_token(app, ALPHA, "viewer", "old")

    def expire(txn: Any) -> None:
        resources = Resources(txn, app.registry)
        stored: Any = resources.get(kind, old.metadata.id)
        changed: Any = kind.resource_cls()
        changed.CopyFrom(stored)
        changed.spec.expires_at.FromSeconds(1_000_000)
        resources.replace(kind, stored, changed)

    app.store.transact(expire)
    with _refusals_logged(app, caplog) as plain:
        for token in (revoked, revoked, expired):  # the second from the refusal cache, and not logged again
            assert code_of(lambda token=token: _whoami(with_token(plain, token))) == grpc.StatusCode.UNAUTHENTICATED
    lines = [r.getMessage() for r in caplog.records if r.name == "stigmer_core.controller"]
    assert [line.split(" method=")[0] for line in lines] == [
        f"denied: principal=token:{ALPHA}/leaked (has been revoked)",
        f"denied: principal=token:{ALPHA}/old (has expired)",
    ]
    assert all(" peer=ipv4:127.0.0.1:" in line for line in lines)
    assert revoked not in caplog.text and expired not in caplog.text


def test_a_flood_of_refusals_is_logged_once_per_interval_with_its_count(app: Application, caplog: Any) -> None:
    """Each refused call wrote its line: a caller without a token grew the log by 1.4 MB in 3 s,
    and the lines an operator looks for were lost among them."""
    now = [1000.0]
    assert app.authenticator is not None
    app.authenticator.denied_log = DeniedLog(60, clock=lambda: now[0])
    with _refusals_logged(app, caplog) as plain:
        for _ in range(50):
            assert code_of(lambda: _whoami(plain)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: _whoami(with_token(plain, "stg_" + "x" * 43))) == grpc.StatusCode.UNAUTHENTICATED
        now[0] += 61
        assert code_of(lambda: _whoami(plain)) == grpc.StatusCode.UNAUTHENTICATED
    lines = [r.getMessage() for r in caplog.records if r.name == "stigmer_core.controller"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("denied: principal=(anonymous ipv4:127.0.0.1:") and "more like it" not in lines[0]
    assert lines[1].startswith("denied: principal=(invalid token) ")  # another kind of refusal: its own line
    assert lines[2].startswith("denied: principal=(anonymous ")
    assert lines[2].endswith(" (and 49 more like it in the last 60 s)"), lines[2]


def test_the_refusal_log_interval_is_a_setting_checked_at_start(tmp_path: Path) -> None:
    assert seconds_from_env({}) == 60 and seconds_from_env({"STIGMER_DENIED_LOG_SECONDS": "0"}) == 0
    for bad in ("soon", "-1", "nan", "3601"):
        with pytest.raises(StartupError, match="STIGMER_DENIED_LOG_SECONDS"):
            seconds_from_env({"STIGMER_DENIED_LOG_SECONDS": bad})
    every = DeniedLog(0)
    assert [every.admit(("p", "m", "s")) for _ in range(3)] == [0, 0, 0]


def test_secrets_of_a_live_context_go_to_its_orgs_runners_only(app: Application) -> None:
    seeded = seed_org(app, ALPHA)
    seed_org(app, BETA)
    context_id = seeded.objects["ExecutionContext"].metadata.id
    execution_id = seeded.objects["AgentExecution"].metadata.id
    by_role = {role: make_token(app, ALPHA, role)[0] for role in ("viewer", "editor", "runner", "admin")}
    beta_runner, _ = make_token(app, BETA, "runner")

    def secret(token: str) -> tuple[grpc.StatusCode, str]:
        kinds = Kinds.on(app, with_token(app.channel(), token))
        try:
            return grpc.StatusCode.OK, kinds.contexts.get(context_id).spec.data["DB_PASSWORD"].value  # type: ignore[attr-defined]
        except grpc.RpcError as exc:
            return exc.code(), ""

    assert secret(by_role["viewer"]) == (grpc.StatusCode.OK, "<redacted>")
    assert secret(by_role["editor"]) == (grpc.StatusCode.OK, "<redacted>")
    assert secret(by_role["runner"]) == (grpc.StatusCode.OK, f"secret-of-{ALPHA}")
    assert secret(by_role["admin"]) == (grpc.StatusCode.OK, f"secret-of-{ALPHA}")
    assert secret(beta_runner) == (grpc.StatusCode.NOT_FOUND, "")
    runner = Kinds.on(app, with_token(app.channel(), by_role["runner"]))
    editor = Kinds.on(app, with_token(app.channel(), by_role["editor"]))
    assert code_of(lambda: editor.report(execution_id, 2)) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: runner.cancel(execution_id)) == grpc.StatusCode.PERMISSION_DENIED
    runner.report(execution_id, IN_PROGRESS)
    done: Any = runner.report(execution_id, COMPLETED)
    assert done.status.phase == COMPLETED
    assert secret(by_role["runner"]) == (grpc.StatusCode.OK, "<redacted>"), "not once the run has ended"


def test_network_path_requires_a_token_but_the_unix_socket_is_the_owner(app: Application, tmp_path: Path) -> None:
    token, _ = make_token(app, ALPHA, "viewer")
    server = Server(app, "127.0.0.1:0", max_workers=4, unix_socket=tmp_path / "s.sock")
    server.start()
    try:
        assert (tmp_path / "s.sock").stat().st_mode & 0o777 == 0o600
        with grpc.insecure_channel(server.address) as plain:
            assert code_of(lambda: _whoami(plain)) == grpc.StatusCode.UNAUTHENTICATED
            assert _whoami(with_token(plain, token)).principal == f"token:{ALPHA}/{ALPHA}-viewer"
        with grpc.insecure_channel(f"unix:{tmp_path / 's.sock'}") as local:
            assert _whoami(local).administrator
    finally:
        server.stop(grace=1)


def test_tls_with_tokens_and_mutual_tls(app: Application, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    token, _ = make_token(app, ALPHA, "editor")
    tls = TlsFiles(str(pki.server_cert), str(pki.server_key))
    server = Server(app, "127.0.0.1:0", max_workers=4, tls=tls)
    server.start()
    try:
        with connect(server.address, token=token, ca_file=str(pki.ca)) as client:
            assert _whoami(client.channel).principal == f"token:{ALPHA}/{ALPHA}-editor"
            agents = KindClient(client.channel, app.registry.kind("Agent"))
            assert agents.list_page().entries == []
        with connect(server.address, ca_file=str(pki.ca)) as client:
            assert code_of(lambda: _whoami(client.channel)) == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(server.address) as plain:  # a plaintext client gets no answer at all
            assert code_of(lambda: _whoami(plain)) == grpc.StatusCode.UNAVAILABLE
        assert not asks_client_certificate(server.address)
    finally:
        server.stop(grace=1)
    mutual = Server(
        app, "127.0.0.1:0", max_workers=4, tls=TlsFiles(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    )
    mutual.start()
    try:
        creds = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        with grpc.secure_channel(mutual.address, creds) as channel:
            assert _whoami(with_token(channel, token)).principal.startswith("token:")
        with connect(mutual.address, token=token, ca_file=str(pki.ca)) as client:  # no client certificate
            assert code_of(lambda: _whoami(client.channel)) == grpc.StatusCode.UNAVAILABLE
        with connect(
            mutual.address,
            token=token,
            ca_file=str(pki.ca),
            cert_file=str(pki.client_cert),
            key_file=str(pki.client_key),
        ) as client:  # connect() presents the client certificate a mutual-TLS server asks for
            assert _whoami(client.channel).principal == f"token:{ALPHA}/{ALPHA}-editor"
        with pytest.raises(StartupError, match="needs both files"):
            connect(mutual.address, token=token, ca_file=str(pki.ca), cert_file=str(pki.client_cert))
        assert asks_client_certificate(mutual.address)
    finally:
        mutual.stop(grace=1)


def _handshake(address: str, ca: Path, token: str) -> grpc.StatusCode:
    """Whoami over a connection of its own (channels otherwise share one per target and credentials)."""
    creds = grpc.ssl_channel_credentials(ca.read_bytes())
    with grpc.secure_channel(address, creds, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        return code_of(lambda: _whoami(with_token(channel, token)))


def test_renewed_certificate_files_are_served_to_new_connections_without_a_restart(
    app: Application, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A team server kept serving the certificate it started with: once that expired, every client
    failed although the renewed files were on disk, until the daemon was restarted."""
    for name in ("first", "renewed", "live"):
        (tmp_path / name).mkdir()
    first, renewed = make_pki(tmp_path / "first"), make_pki(tmp_path / "renewed")
    live = tmp_path / "live"
    (live / "server.pem").write_bytes(first.server_cert.read_bytes())
    (live / "server.key").write_bytes(first.server_key.read_bytes())
    token, _ = make_token(app, ALPHA, "viewer")
    server = Server(app, "127.0.0.1:0", max_workers=4, tls=TlsFiles(str(live / "server.pem"), str(live / "server.key")))
    server.start()
    try:
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.OK
        caplog.set_level(logging.WARNING, logger="stigmer_core.auth.transport")
        (live / "server.key").write_bytes(renewed.server_key.read_bytes())  # half renewed: not a pair yet
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.OK
        assert "cannot be served yet" in caplog.text
        (live / "server.pem").write_bytes(renewed.server_cert.read_bytes())
        assert _handshake(server.address, renewed.ca, token) == grpc.StatusCode.OK
        assert _handshake(server.address, first.ca, token) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=1)


def test_a_certificate_and_a_key_that_are_not_a_pair_fail_at_startup_saying_so(
    app: Application, tmp_path: Path
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "other").mkdir()
    one, other = make_pki(tmp_path / "one"), make_pki(tmp_path / "other")
    with pytest.raises(StartupError, match="not a PEM certificate and its key"):
        Server(app, "127.0.0.1:0", tls=TlsFiles(str(one.server_cert), str(other.server_key)))


def test_a_non_loopback_address_without_tls_and_auth_is_refused_before_binding(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    pki = make_pki(tmp_path)
    tls = TlsFiles(str(pki.server_cert), str(pki.server_key))
    cases = [
        (False, None, r"no TLS .* and no authentication"),
        (False, tls, "no authentication"),
        (True, None, "no TLS"),
    ]
    for n, (require_auth, given_tls, lacking) in enumerate(cases):
        app = Application.open(tmp_path / f"d{n}", durable=False, require_auth=require_auth, store=stigmer_store)
        try:
            for address in ("0.0.0.0:0", "[::]:0"):
                with pytest.raises(InsecureTransport, match=lacking):
                    Server(app, address, tls=given_tls)
        finally:
            app.close()


def test_a_token_is_never_sent_in_clear_to_a_remote_address() -> None:
    with pytest.raises(InsecureTransport, match="plaintext"):
        connect("10.1.2.3:50051", token="stg_x", tls=False)
    with connect("10.1.2.3:50051", token="stg_x") as client:  # TLS by default: nothing is dialled yet
        assert client.target == "10.1.2.3:50051"


def test_a_target_that_is_no_host_and_port_is_refused_before_anything_is_dialled() -> None:
    """grpc took ``http://host:port`` and a bare host as given (the first with TLS) and failed at
    the first call in its own words (``Misformatted domain name``); grpc's own schemes stay open."""
    from stigmer_core.errors import InvalidArgument

    for target in ("http://127.0.0.1:50051", "127.0.0.1", "team.example:0", "team.example:65536"):
        with pytest.raises(InvalidArgument, match=r"target: invalid endpoint .*: use HOST:PORT") as refused:
            connect(target)
        assert refused.value.violations[0].field == "target" and target in str(refused.value)
    for target in ("dns:///127.0.0.1:50051", "[::1]:50051", "localhost:50051"):
        with connect(target) as client:
            assert client.target == target


def test_unrestricted_local_mode_is_unchanged(tmp_path: Path, stigmer_store: str | None) -> None:
    """Tokens not required: a caller without a valid token is the local administrator, every org
    visible (as before; the SDK's placeholder key keeps working); a valid token still narrows it."""
    with Application.open(tmp_path / "d", durable=False, store=stigmer_store) as app:
        seed_org(app, ALPHA)
        seed_org(app, BETA)
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        assert {e.metadata.org for e in agents.list_page().entries} == {ALPHA, BETA}
        server = Server(app, "127.0.0.1:0", max_workers=4)
        server.start()
        try:
            with grpc.insecure_channel(server.address) as plain:
                assert _whoami(plain).administrator
                assert _whoami(with_token(plain, "sk_placeholder")).administrator
                viewer, _ = make_token(app, BETA, "viewer")
                assert _whoami(with_token(plain, viewer)).principal == f"token:{BETA}/{BETA}-viewer"
                as_viewer = KindClient(with_token(plain, viewer), app.registry.kind("Agent"))
                assert {e.metadata.org for e in as_viewer.list_page().entries} == {BETA}
        finally:
            server.stop(grace=1)


def test_stored_bytes_hold_no_token(app: Application) -> None:
    token, created = make_token(app, ALPHA, "admin")
    with app.store.read() as txn:
        raw = txn.get(keys.object_key("apitokens", created.metadata.id))
    assert raw is not None and token.encode() not in raw


def test_another_orgs_skill_artifact_is_not_found(app: Application) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SKILL.md", "---\nname: Calculator\ndescription: Adds\n---\n# Calc\n")
    pushed = skill_grpc.SkillCommandControllerStub(app.channel()).push(
        skill_pb2.PushSkillRequest(org=BETA, artifact=buffer.getvalue()), timeout=10
    )
    key = pushed.status.artifact_storage_key
    request = skill_pb2.GetArtifactRequest(artifact_storage_key=key)
    beta_viewer, _ = make_token(app, BETA, "viewer")
    alpha_admin, _ = make_token(app, ALPHA, "admin")
    queries = skill_grpc.SkillQueryControllerStub
    assert queries(with_token(app.channel(), beta_viewer)).getArtifact(request, timeout=10).artifact
    assert code_of(lambda: queries(with_token(app.channel(), alpha_admin)).getArtifact(request, timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_a_token_deleted_over_the_network_is_refused_at_once_despite_the_cache(
    app: Application, tmp_path: Path
) -> None:
    """The delete's on-commit callback (forget the cached token) runs on the network path too,
    where the write was queued on the group commit from the server's event loop."""
    token, made = make_token(app, ALPHA, "viewer")
    server = Server(app, "127.0.0.1:0", unix_socket=tmp_path / "s.sock")
    server.start()
    try:
        with grpc.insecure_channel(server.address) as plain:
            assert _whoami(with_token(plain, token)).principal == f"token:{ALPHA}/{ALPHA}-viewer"  # now cached
            with grpc.insecure_channel(f"unix:{tmp_path / 's.sock'}") as local:
                KindClient(local, app.registry.kind("ApiToken")).delete(made.metadata.id)
            assert code_of(lambda: _whoami(with_token(plain, token))) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(grace=1)


def test_a_token_deleted_with_its_owner_is_refused_at_once_despite_the_cache(
    app: Application, tmp_path: Path
) -> None:
    """Only the ApiToken kind's own delete forgot a token: one deleted with the token that owned
    it (a cascade runs no step of the owned kind) was still taken for the cache's 5 s, by the very
    server that deleted it, time enough to make an admin token that outlived it."""
    tokens = KindClient(app.channel(), app.registry.kind("ApiToken"))
    _, owner = make_token(app, ALPHA, "admin", "owner")
    made = apitoken_pb2.ApiToken(spec=apitoken_pb2.ApiTokenSpec(role="admin"))
    made.metadata.name, made.metadata.org = "owned", ALPHA
    made.metadata.owner_references.add(kind="ApiToken", id=owner.metadata.id)
    owned: Any = tokens.create(made)
    server = Server(app, "127.0.0.1:0", unix_socket=tmp_path / "s.sock")
    server.start()
    try:
        with grpc.insecure_channel(server.address) as plain:
            assert _whoami(with_token(plain, owned.status.token)).principal == f"token:{ALPHA}/owned"  # now cached
            with grpc.insecure_channel(f"unix:{tmp_path / 's.sock'}") as local:
                KindClient(local, app.registry.kind("ApiToken")).delete(owner.metadata.id)
            assert code_of(lambda: tokens.get(owned.metadata.id)) == grpc.StatusCode.NOT_FOUND  # the cascade
            assert code_of(lambda: _whoami(with_token(plain, owned.status.token))) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(grace=1)


def test_a_push_without_an_org_lands_in_the_callers_org(app: Application) -> None:
    """As every create does: the caller's one org, never the server's default (whose slugs an
    ALREADY_EXISTS would otherwise tell a caller that is not in it)."""
    skill_grpc.SkillCommandControllerStub(app.channel()).push(
        skill_pb2.PushSkillRequest(org="local", slug="payroll", skill_md="# Payroll"), timeout=10
    )
    editor, _ = make_token(app, BETA, "editor")
    commands = skill_grpc.SkillCommandControllerStub(with_token(app.channel(), editor))
    pushed = commands.push(skill_pb2.PushSkillRequest(slug="payroll", skill_md="# Ours"), timeout=10)
    assert (pushed.metadata.org, pushed.metadata.slug) == (BETA, "payroll")


def test_a_token_of_the_wrong_shape_is_refused_without_a_look_at_the_store(app: Application) -> None:
    auth = app.authenticator
    assert auth is not None
    for garbage in ("not-a-token", "stg_short", "stg_" + "x" * 42 + "!", "Stg_" + "x" * 43):
        with pytest.raises(Unauthenticated, match="not a Stigmer API token"):
            auth.by_token(garbage)
    assert auth._refused == {}, "nothing was looked up, so nothing is remembered"
    with pytest.raises(Unauthenticated, match="not valid"):
        auth.by_token("stg_" + "x" * 43)
    assert len(auth._refused) == 1


def test_a_unix_socket_address_is_the_owners_alone(app: Application, tmp_path: Path) -> None:
    """A caller on a Unix socket is the local administrator, so the socket is 0600 whatever
    the umask, and it answers at the address it was given."""
    import os
    import stat

    path = tmp_path / "main.sock"
    previous = os.umask(0)
    try:
        server = Server(app, f"unix:{path}")
    finally:
        os.umask(previous)
    server.start()
    try:
        assert server.address == f"unix:{path}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with grpc.insecure_channel(server.address) as channel:
            assert _whoami(channel).principal == "local"
    finally:
        server.stop(None)
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    with pytest.raises(Exception, match="cannot listen"):
        Server(app, f"unix:{plain}")
    assert plain.read_text() == "keep me"


def test_a_caller_who_cannot_read_a_secret_cannot_test_guesses_of_it(app: Application) -> None:
    """Whether a write keeping a secret's clear value changes anything would answer whether a
    guess is right (a dry run answers that and writes nothing): for an editor a clear value
    is always sealed anew; an admin (who may read it) keeps the stored one, so its applies
    stay unchanged."""
    from stigmer_core.api.agentic.environment.v1 import environment_pb2
    from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as env_grpc

    admin, _ = make_token(app, ALPHA, "admin")
    editor, _ = make_token(app, ALPHA, "editor")
    env = environment_pb2.Environment()
    env.metadata.name = "prod"
    env.spec.data["DB_PIN"].value = "4711"
    env.spec.data["DB_PIN"].is_secret = True
    stored: Any = KindClient(with_token(app.channel(), admin), app.registry.kind("Environment")).create(env)
    dry_run = (("stigmer-dry-run", "true"),)
    for token, keeps in ((editor, False), (admin, True)):
        stub = env_grpc.EnvironmentCommandControllerStub(with_token(app.channel(), token))
        answers = {}
        for guess in ("4711", "1234"):
            doc = environment_pb2.Environment()
            doc.CopyFrom(stored)
            doc.spec.data["DB_PIN"].value = guess
            answers[guess] = stub.update(doc, metadata=dry_run, timeout=10).metadata.resource_version
        unchanged = stored.metadata.resource_version
        assert answers["1234"] != unchanged
        assert (answers["4711"] == unchanged) is keeps, token


def test_an_agents_secret_header_cannot_be_guessed_by_an_editor_either(app: Application) -> None:
    from stigmer_core.api.agentic.agent.v1 import agent_pb2
    from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc

    editor, _ = make_token(app, ALPHA, "editor")
    agent = agent_pb2.Agent()
    agent.metadata.name = "bot"
    agent.metadata.org = ALPHA
    server = agent.spec.mcp_servers.add(name="tools", url="https://tools.example")
    server.headers["Authorization"] = "Bearer s3cret"
    server.secret_headers.append("Authorization")
    stored: Any = KindClient(app.channel(), app.registry.kind("Agent")).create(agent)
    stub = agent_grpc.AgentCommandControllerStub(with_token(app.channel(), editor))
    doc = agent_pb2.Agent()
    doc.CopyFrom(stored)
    doc.spec.mcp_servers[0].headers["Authorization"] = "Bearer s3cret"
    answered = stub.update(doc, metadata=(("stigmer-dry-run", "true"),), timeout=10)
    assert answered.metadata.resource_version != stored.metadata.resource_version


def test_a_call_with_two_authorization_entries_is_refused(app: Application) -> None:
    """With two, the first decided who the call ran as: a proxy adding its own entry after a
    client's (or before it) made the order of headers the credential."""
    viewer, _ = make_token(app, ALPHA, "viewer")
    admin, _ = make_token(app, ALPHA, "admin")
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub: Any = identity_pb2_grpc.IdentityServiceStub
            whoami = stub(channel).whoami
            for pair in ((viewer, admin), (admin, viewer)):
                metadata = [("authorization", f"Bearer {one}") for one in pair]
                with pytest.raises(grpc.RpcError) as refused:
                    whoami(identity_pb2.WhoamiRequest(), metadata=metadata, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "2 authorization entries" in (refused.value.details() or "")
            alone = whoami(identity_pb2.WhoamiRequest(), metadata=[("authorization", f"Bearer {viewer}")], timeout=10)
            assert alone.principal == f"token:{ALPHA}/{ALPHA}-viewer"
    finally:
        server.stop(grace=1)
