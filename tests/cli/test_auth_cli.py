"""``stigmer token``, ``login``, ``whoami`` and ``serve``'s refusal to be open, through the real command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.auth_support import Pki

from .conftest import TIMEOUT, Stigmer, free_port
from .test_resources import CODER


def test_first_token_in_process_then_login_to_a_server_that_requires_tokens(
    stigmer: Stigmer, stigmer_store: str | None
) -> None:
    stigmer.store = stigmer_store
    made = stigmer("token", "create", "--org", "acme", "--role", "admin", "--name", "first")
    assert made.code == 0, made.err
    token = made.out.strip()
    assert token.startswith("stg_") and "shown only now" in made.err
    listed = stigmer.ok("token", "list", "--org", "acme")
    assert "first" in listed and "admin" in listed and "active" in listed and token not in listed

    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    assert "local administrator" in stigmer.ok("whoami"), "the owner's Unix socket needs no token"

    assert "the API token is not valid" in stigmer.fails("login", "--endpoint", daemon, "--token", "stg_" + "z" * 43)
    logged = stigmer.ok("login", "--endpoint", daemon, "--token", token)
    assert "as token:acme/first (admin in acme)" in logged
    config_file = stigmer.home / "config.yaml"
    saved = yaml.safe_load(config_file.read_text())
    assert saved["remote"] == {"endpoint": daemon, "token": token, "org": "acme"} and saved["org"] == "acme"
    assert config_file.stat().st_mode & 0o077 == 0
    assert stigmer.ok("whoami").strip() == "token:acme/first (admin in acme)"

    assert "agent/coder created" in stigmer.ok("apply", "-f", "-", input=CODER)
    viewer = stigmer.ok("token", "create", "--role", "viewer", "--name", "ro").strip()
    assert stigmer.ok("whoami", "--org", "acme").strip() == "token:acme/first (admin in acme)"
    stigmer.ok("login", "--endpoint", daemon, "--token", viewer)
    assert "coder" in stigmer.ok("get", "agent", "coder")
    assert "lacks write access" in stigmer.fails("apply", "-f", "-", input=CODER.replace("coder", "other"))
    stigmer.ok("login", "--endpoint", daemon, "--token", token)
    assert "token/ro revoked" in stigmer.ok("token", "revoke", "ro")
    stigmer.ok("backend", "switch", "remote", "--token", viewer)
    revoked = stigmer.fails("get", "agent")
    assert revoked.startswith("the API token has been revoked (the token saved in "), revoked
    assert revoked.endswith(": `stigmer login` with a valid one (`stigmer token create` makes one)"), revoked
    from_env = stigmer("get", "agent", env={"STIGMER_TOKEN": viewer}).err
    assert "(the token in $STIGMER_TOKEN, which overrides the config file's): set $STIGMER_TOKEN" in from_env
    assert "caller:      refused: the API token has been revoked" in stigmer.ok("backend", "status")
    stigmer.ok("backend", "switch", "remote", "--token", token)
    assert "caller:      token:acme/first (admin in acme)" in stigmer.ok("backend", "status")
    # revoking the token the command is sent with says what happens next (it was a surprise)
    second = stigmer.ok("token", "create", "--role", "admin", "--name", "second").strip()
    stigmer.ok("login", "--endpoint", daemon, "--token", second)
    own = stigmer("token", "revoke", "second")
    assert own.code == 0 and "token/second revoked" in own.out, own.err
    assert "note: token/second is the token this command was sent with: the next command" in own.err, own.err
    assert "note:" not in stigmer("token", "revoke", "ro", env={"STIGMER_TOKEN": token}).err


def test_a_token_goes_only_to_its_server_and_is_taken_as_printed(
    stigmer: Stigmer, tmp_path: Path, stigmer_store: str | None
) -> None:
    """Switching the endpoint kept the old server's token, which then went to the new server; a
    token pasted with its line break was stored and every call failed with "Invalid metadata";
    login wanted the token on the command line (shell history, `ps`); a relative --ca-file was
    stored as given and failed from any other directory."""
    stigmer.store = stigmer_store
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "ci").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    logged = stigmer("login", "--endpoint", daemon, env={"STIGMER_TOKEN": token + "\n"})
    assert logged.code == 0 and "as token:acme/ci (viewer in acme)" in logged.out, logged.err
    config_file = stigmer.home / "config.yaml"
    assert yaml.safe_load(config_file.read_text())["remote"]["token"] == token

    other = f"127.0.0.1:{free_port()}"
    switched = stigmer("backend", "switch", "remote", "--endpoint", other)
    assert switched.code == 0 and "the token kept for the previous endpoint was dropped" in switched.err
    assert "token" not in yaml.safe_load(config_file.read_text())["remote"]
    assert "token:       not set" in stigmer.ok("backend", "status")

    ca = tmp_path / "ca.pem"
    ca.write_text("any PEM")
    switched = subprocess.run(
        [sys.executable, "-m", "stigmer_core.cli", "backend", "switch", "remote", "--ca-file", "ca.pem"],
        cwd=tmp_path, env=stigmer.env(), capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert switched.returncode == 0, switched.stderr
    assert yaml.safe_load(config_file.read_text())["remote"]["ca_file"] == str(ca)
    assert "cannot carry" in stigmer.fails("backend", "switch", "remote", "--token", "stg_abc\ndef", code=2)


def test_a_token_switched_in_without_login_is_told_where_the_org_came_from(
    stigmer: Stigmer, stigmer_store: str | None
) -> None:
    """`backend switch remote --token` keeps the default org 'local', which a team server does not
    have: every command said only "org 'local' not found"."""
    stigmer.store = stigmer_store
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    stigmer.ok("backend", "switch", "remote", "--endpoint", daemon, "--token", token)
    error = stigmer.fails("get", "agents")
    assert error.startswith(f"org 'local' not found on {daemon} (the org comes from the config file")
    assert "`stigmer login`" in error
    assert stigmer.fails("get", "agents", "--org", "globex") == "org 'globex' not found"  # named: no guess
    assert "no agents found in org 'acme'" in stigmer("get", "agents", "--org", "acme").err


def test_serve_refuses_a_public_address_without_tls_and_tokens(stigmer: Stigmer) -> None:
    error = stigmer.fails("serve", "--address", "0.0.0.0:0", "--data-dir", str(stigmer.data_dir))
    assert error.startswith("refusing to listen on 0.0.0.0:0") and "--tls-cert" in error and "--require-auth" in error
    # the way out it names says what it costs: it was offered as the fix for a missing --require-auth
    assert "without --require-auth every caller is then administrator of every org" in error
    assert not stigmer.data_dir.exists(), "refused before touching anything"
    error = stigmer.fails("serve", "--address", f"10.0.0.1:{free_port()}", "--require-auth")
    assert "no TLS" in error and "no authentication" not in error


def test_a_daemon_checking_no_tokens_says_every_caller_is_administrator(
    stigmer: Stigmer, stigmer_store: str | None
) -> None:
    stigmer.store = stigmer_store
    address = f"127.0.0.1:{free_port()}"
    stigmer.home.mkdir(parents=True, exist_ok=True)
    (stigmer.home / "config.yaml").write_text("server:\n  insecure_no_auth: true\n")
    stigmer.started.append(stigmer.data_dir)
    out = stigmer.ok("local", "start", "--address", address, "--data-dir", str(stigmer.data_dir))
    log = Path(re.search(r"^log file: (.+?) \(", out, re.M).group(1))  # type: ignore[union-attr]
    said = f"listening on {address} (INSECURE: no authentication, every caller is administrator of every org)"
    assert said in log.read_text(), out
    served = "(data: postgresql://" if stigmer_store else f"(data: {stigmer.data_dir};"
    assert served in log.read_text(), "the daemon serves the store of the engine under test"


def test_a_quoted_false_in_the_config_file_is_refused_not_read_as_true(stigmer: Stigmer) -> None:
    """``"false"`` is a true string in Python: read as one, it would turn the refusal above off."""
    stigmer.home.mkdir(parents=True, exist_ok=True)
    (stigmer.home / "config.yaml").write_text('server:\n  insecure_no_auth: "false"\n')
    error = stigmer.fails("serve", "--address", "0.0.0.0:0", "--data-dir", str(stigmer.data_dir))
    assert "server.insecure_no_auth must be true or false" in error
    (stigmer.home / "config.yaml").write_text("server:\n  insecure_no_auth: false\n")
    assert stigmer.fails("serve", "--address", "0.0.0.0:0", "--data-dir", str(stigmer.data_dir)).startswith(
        "refusing to listen on 0.0.0.0:0"
    )


def test_token_list_tells_an_expired_token_and_a_bad_duration_is_a_usage_error(stigmer: Stigmer) -> None:
    """An expired token was listed "active" (the server refuses it); a mistyped --expires exited 1;
    `--expires 1s` was refused "in the past", its second counted from before the store opened."""
    import time

    stigmer.ok("token", "create", "--role", "viewer", "--name", "brief", "--expires", "1s")
    made = time.monotonic()
    stigmer.ok("token", "create", "--role", "viewer", "--name", "lasting", "--expires", "1d")
    time.sleep(max(0.0, 1.5 - (time.monotonic() - made)))
    states = {line.split()[0]: line.split()[-1] for line in stigmer.ok("token", "list").splitlines()[1:]}
    assert states == {"brief": "expired", "lasting": "active"}
    assert stigmer.fails("token", "create", "--role", "viewer", "--expires", "1y", code=2).startswith(
        "invalid duration"
    )


def _tls_daemon(stigmer: Stigmer, tmp_path: Path) -> tuple[str, Pki, Pki]:
    """A daemon serving TLS (its address), the PKI that signed its certificate, and another one."""
    from tests.auth_support import make_pki

    for name in ("served", "other"):
        (tmp_path / name).mkdir()
    served, other = make_pki(tmp_path / "served"), make_pki(tmp_path / "other")
    stigmer.home.mkdir(parents=True, exist_ok=True)
    (stigmer.home / "config.yaml").write_text(
        yaml.safe_dump({"server": {"tls_cert": str(served.server_cert), "tls_key": str(served.server_key)}})
    )
    return stigmer.start().address, served, other


def test_tls_trouble_is_named_in_one_line(stigmer: Stigmer, tmp_path: Path, stigmer_store: str | None) -> None:
    """A wrong CA, a CA file that is no PEM, or plaintext to a TLS server all said "cannot reach the
    server (is it running?)", with grpc's own log lines around that one line."""
    stigmer.store = stigmer_store
    daemon, served, other = _tls_daemon(stigmer, tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cases = {
        str(other.ca): "its certificate is not signed by a CA this client trusts",
        str(garbage): "the CA file, or the client certificate and key, could not be used",
        "": "if it serves TLS, give its CA with --ca-file",
    }
    for ca_file, words in cases.items():
        failed = stigmer("get", "agents", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_CA_FILE": ca_file})
        assert failed.code == 1 and words in failed.err, failed.err
        assert len(failed.err.strip().splitlines()) == 1, failed.err  # nothing of grpc's own logging
    trusted = stigmer(
        "get", "agents", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_CA_FILE": str(served.ca)}
    )
    assert trusted.code == 0, trusted.err
    untrusted = stigmer(
        "backend", "status", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_CA_FILE": str(other.ca)}
    )
    assert "not reachable: TLS: its certificate is not signed by a CA this client trusts" in untrusted.out
    # a data directory deeper than a socket address holds: its socket is named through a descriptor
    far = stigmer.home / ("d" * 120)
    started = stigmer.start(data_dir=far)  # waited its whole timeout, then stopped the daemon it started
    assert "listening on" in started.output, started.output


def test_a_certificate_refused_for_its_dates_is_named_so_not_as_an_untrusted_ca(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """With the right CA, an expired (or not yet valid) server certificate was reported as "not
    signed by a CA this client trusts (give the CA with --ca-file)", which sent people after the CA."""
    import datetime

    from tests.auth_support import make_pki

    day = datetime.timedelta(days=1)
    for name, valid, words in (
        ("expired", (-2 * day, -day), "its certificate has expired"),
        ("future", (day, 2 * day), "its certificate is not valid yet"),
    ):
        (tmp_path / name).mkdir()
        pki = make_pki(tmp_path / name, server_valid=valid)
        stigmer.home.mkdir(parents=True, exist_ok=True)
        (stigmer.home / "config.yaml").write_text(
            yaml.safe_dump({"server": {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key)}})
        )
        daemon = stigmer.start(data_dir=tmp_path / name / "data").address
        failed = stigmer(
            "get", "agents", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_CA_FILE": str(pki.ca)}
        )
        assert failed.code == 1 and words in failed.err and "CA this client trusts" not in failed.err, failed.err


def test_a_login_that_reaches_nothing_names_the_server_it_dialled_not_the_local_daemon(stigmer: Stigmer) -> None:
    """With the local backend configured (a fresh home), a failed login was said of "the local
    stigmer daemon of data directory ...", at the login's endpoint, with local hints."""
    import socket

    with socket.socket() as unused:  # a port nothing listens on: bound, never listening
        unused.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{unused.getsockname()[1]}"
        failed = stigmer("login", "--endpoint", endpoint, env={"STIGMER_TOKEN": "stg_" + "A" * 43})
    assert failed.code == 1, failed.err
    assert f"cannot reach the stigmer server at {endpoint}" in failed.err, failed.err
    assert "local" not in failed.err, failed.err


def test_a_client_certificate_reaches_a_mutual_tls_server(
    stigmer: Stigmer, tmp_path: Path, stigmer_store: str | None
) -> None:
    """`stigmer serve --tls-client-ca` was documented, but no client could present a certificate: no
    flag, setting or variable took one, and the refusal said "give its CA with --ca-file"."""
    from tests.auth_support import make_pki

    stigmer.store = stigmer_store
    pki = make_pki(tmp_path)
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "ci").strip()
    server = {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key), "tls_client_ca": str(pki.ca)}
    (stigmer.home / "config.yaml").write_text(yaml.safe_dump({"server": {**server, "require_auth": True}}))
    daemon = stigmer.start().address
    remote = ("--backend", "remote", "--endpoint", daemon, "--org", "acme")
    tls = {"STIGMER_CA_FILE": str(pki.ca), "STIGMER_TOKEN": token}

    refused = stigmer("get", "agents", *remote, env=tls)
    assert refused.code == 1, refused.err
    assert "the server asks for a client certificate: give --cert-file and --key-file" in refused.err
    assert "--ca-file" not in refused.err and len(refused.err.strip().splitlines()) == 1, refused.err
    assert (
        "not reachable: TLS: the server asks for a client certificate"
        in stigmer("backend", "status", *remote, env=tls).out
    )

    mismatched = {**tls, "STIGMER_CERT_FILE": str(pki.client_cert), "STIGMER_KEY_FILE": str(pki.server_key)}
    wrong_pair = stigmer("get", "agents", *remote, env=mismatched)  # it blamed the CA file
    assert "the client certificate and key, could not be used" in wrong_pair.err, wrong_pair.err

    mutual = {**tls, "STIGMER_CERT_FILE": str(pki.client_cert), "STIGMER_KEY_FILE": str(pki.client_key)}
    listed = stigmer("get", "agents", *remote, env=mutual)
    assert listed.code == 0 and "no agents found in org 'acme'" in listed.err, listed.err
    half = stigmer("get", "agents", *remote, env={**tls, "STIGMER_CERT_FILE": str(pki.client_cert)})
    assert "needs both files" in half.err, half.err

    assert (
        "needs both --cert-file and --key-file"
        in stigmer("login", "--endpoint", daemon, "--token", token, "--cert-file", str(pki.client_cert)).err
    )
    logged = stigmer(
        "login", "--endpoint", daemon, "--ca-file", str(pki.ca),
        "--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key), env={"STIGMER_TOKEN": token},
    )  # fmt: skip
    assert logged.code == 0 and "as token:acme/ci (viewer in acme)" in logged.out, logged.err
    saved = yaml.safe_load((stigmer.home / "config.yaml").read_text())["remote"]
    assert (saved["cert_file"], saved["key_file"]) == (str(pki.client_cert), str(pki.client_key))
    assert stigmer.ok("whoami").strip() == "token:acme/ci (viewer in acme)"
    assert "caller:      token:acme/ci (viewer in acme)" in stigmer.ok("backend", "status")

    other = f"127.0.0.1:{free_port()}"
    switched = stigmer("backend", "switch", "remote", "--endpoint", other)
    assert "the token, ca file, cert file and key file kept for the previous endpoint were dropped" in switched.err
    switched = stigmer(
        "backend", "switch", "remote", "--endpoint", daemon, "--token", token, "--ca-file", str(pki.ca),
        "--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key),
    )  # fmt: skip
    assert switched.code == 0, switched.err
    assert stigmer.ok("whoami").strip() == "token:acme/ci (viewer in acme)"


def test_a_runner_gets_a_live_execution_context_by_id_with_its_secrets(
    stigmer: Stigmer, tmp_path: Path, stigmer_store: str | None
) -> None:
    """The CLI read an id with getByReference, and only `get` gives a runner a live execution's
    secrets: `stigmer get executioncontext ID -o yaml` showed them <redacted> to the runner too."""
    from stigmer_core import Application
    from stigmer_core.server import Server
    from tests.auth_support import make_token, seed_org

    app = Application.open(tmp_path / "served", durable=False, require_auth=True, store=stigmer_store)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    try:
        seeded = seed_org(app, "alpha")
        context = seeded.objects["ExecutionContext"].metadata
        server.start()
        remote = ("--backend", "remote", "--endpoint", server.address, "--org", "alpha", "-o", "yaml")
        shown = {}
        for role in ("runner", "viewer"):
            token, _ = make_token(app, "alpha", role)
            by_id = stigmer("get", "executioncontext", context.id, *remote, env={"STIGMER_TOKEN": token})
            assert by_id.code == 0, by_id.err
            shown[role] = yaml.safe_load(by_id.out)["spec"]["data"]["DB_PASSWORD"]["value"]
            by_slug = stigmer("get", "executioncontext", context.slug, *remote, env={"STIGMER_TOKEN": token})
            assert yaml.safe_load(by_slug.out)["spec"]["data"]["DB_PASSWORD"]["value"] == "<redacted>"
        assert shown == {"runner": "secret-of-alpha", "viewer": "<redacted>"}
        token, _ = make_token(app, "alpha", "admin", "other org")
        other = stigmer(
            "get", "executioncontext", context.id, *remote[:4], "--org", "beta", env={"STIGMER_TOKEN": token}
        )
        assert other.code == 1 and "is in org 'alpha', not in org 'beta': give --org alpha" in other.err, other.err
    finally:
        server.stop(grace=1)
        app.close()


def test_login_warns_of_a_server_that_does_not_require_tokens(stigmer: Stigmer, stigmer_store: str | None) -> None:
    """A token was saved without a word although the server let anyone in without one."""
    stigmer.store = stigmer_store
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "ci").strip()
    daemon = stigmer.start().address
    open_login = stigmer("login", "--endpoint", daemon, env={"STIGMER_TOKEN": token})
    assert open_login.code == 0, open_login.err
    assert f"the server at {daemon} does not require tokens" in open_login.err
    stigmer.ok("local", "stop")
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    checked = stigmer("login", "--endpoint", daemon, env={"STIGMER_TOKEN": token})
    assert checked.code == 0 and "as token:acme/ci" in checked.out and checked.err == "", checked.err
    # told by the answer to the token's own whoami: no call without a token, which the server's
    # log kept as a denial for every login
    from stigmer_core.cli.daemon import Files

    logged = Files(stigmer.data_dir).log_file.read_text()
    assert "listening on" in logged and "denied:" not in logged, logged


def test_export_all_by_a_single_org_token_names_that_org(stigmer: Stigmer, stigmer_store: str | None) -> None:
    """It said `from every org` when the token could read one."""
    stigmer.store = stigmer_store
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "ci").strip()
    stigmer.ok("apply", "--org", "acme", "-f", "-", input=CODER)
    stigmer.ok("apply", "--org", "globex", "-f", "-", input=CODER)
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    exported = stigmer("export", "--all", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_TOKEN": token})
    assert exported.code == 0, exported.err
    assert "from org 'acme' (every org this caller can read)" in exported.err, exported.err
    owner = stigmer("export", "--all")
    assert owner.code == 0 and "from every org" in owner.err, owner.err
    # another org's: refused once, not once per kind (each kind's list said "org 'globex' not found")
    other = stigmer(
        "export", "--all", "--org", "globex", "--backend", "remote", "--endpoint", daemon, env={"STIGMER_TOKEN": token}
    )
    assert other.code == 1 and other.out.count("not exported") == 1, other.out
    assert "# stigmer export failed: not exported: kinds 'environment', 'skill', 'agent', " in other.out, other.out
    assert other.err.count("not found") == 1 and "org 'globex' not found" in other.err, other.err


def test_a_plaintext_call_to_a_mutual_tls_server_on_loopback_asks_for_the_ca_too(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """Without a CA a loopback address is dialled in plaintext: the refusal asked only for a client
    certificate, and giving one led to a second refusal, of the server's certificate."""
    from tests.auth_support import make_pki

    pki = make_pki(tmp_path)
    server = {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key), "tls_client_ca": str(pki.ca)}
    stigmer.home.mkdir(parents=True, exist_ok=True)
    (stigmer.home / "config.yaml").write_text(yaml.safe_dump({"server": server}))
    daemon = stigmer.start().address
    refused = stigmer("get", "agents", "--backend", "remote", "--endpoint", daemon)
    assert refused.code == 1, refused.err
    assert "give --cert-file and --key-file and its CA with --ca-file" in refused.err, refused.err
    status = stigmer("backend", "status", "--backend", "remote", "--endpoint", daemon).out
    assert "client certificate: give --cert-file and --key-file and its CA with --ca-file" in status, status


def test_the_ca_is_given_as_the_messages_say_and_a_bad_endpoint_is_a_usage_error(
    stigmer: Stigmer, tmp_path: Path
) -> None:
    """An untrusted server's message said "give the CA with --ca-file", which only `login` and
    `backend switch` took (every other command: "No such option"); `login` ignored the
    $STIGMER_CA_FILE its own refusal named; an endpoint that is no HOST:PORT, or a host that does
    not resolve, was answered in grpc's resolver's words; and `-v` before the command printed a
    line per descriptor file grpc's reflection client read, burying the failure."""
    daemon, served, other = _tls_daemon(stigmer, tmp_path)
    remote = ("--backend", "remote", "--endpoint", daemon)
    untrusted = stigmer("get", "agents", *remote, "--ca-file", str(other.ca))
    assert untrusted.code == 1 and "give the CA that signed it with --ca-file" in untrusted.err, untrusted.err
    assert "if a CA file was given, it did not sign it" in untrusted.err  # one was given: not that one
    trusted = stigmer("-v", "get", "agents", *remote, "--ca-file", str(served.ca))
    assert trusted.code == 0, trusted.err
    assert "grpc_reflection" not in trusted.err, trusted.err
    logged_in = stigmer(
        "login", "--endpoint", daemon, env={"STIGMER_TOKEN": "stg_" + "A" * 43, "STIGMER_CA_FILE": str(served.ca)}
    )
    assert "cannot reach" not in logged_in.err and "TLS" not in logged_in.err, logged_in.err
    for endpoint in ("nohostport", ":50051", "127.0.0.1:99999", "127.0.0.1:0"):
        refused = stigmer("get", "agents", "--backend", "remote", "--endpoint", endpoint)
        assert refused.code == 2, (endpoint, refused.err)
        assert f"invalid endpoint '{endpoint}': use HOST:PORT" in refused.err, refused.err
    from_env = stigmer("get", "agents", "--backend", "remote", env={"STIGMER_ENDPOINT": "nohostport"})
    assert from_env.code == 1 and "invalid endpoint 'nohostport': use HOST:PORT" in from_env.err, from_env.err
    nowhere = stigmer("get", "agents", "--backend", "remote", "--endpoint", "no.such.host.invalid:443")
    assert nowhere.code == 1, nowhere.err
    assert "cannot reach the stigmer server at no.such.host.invalid:443: its host name does not resolve" in nowhere.err


def test_a_token_kept_from_another_endpoint_is_said_so(stigmer: Stigmer, stigmer_store: str | None) -> None:
    """The config's token goes only to the endpoint it was saved for; dialling the same server by
    another name answered "this server requires an API token ... stigmer login", as if none was
    saved."""
    stigmer.store = stigmer_store
    token = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "ci").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    assert stigmer("login", "--endpoint", daemon, env={"STIGMER_TOKEN": token}).code == 0
    assert stigmer("get", "agents").code == 0
    other = "localhost:" + daemon.rsplit(":", 1)[1]
    refused = stigmer("get", "agents", "--endpoint", other)
    assert refused.code == 1 and "this server requires an API token" in refused.err, refused.err
    assert f"the config file's token was saved for {daemon} and is not sent to {other}" in refused.err, refused.err
    given = stigmer("get", "agents", "--endpoint", other, env={"STIGMER_TOKEN": token})
    assert given.code == 0, given.err


def test_a_metrics_address_in_the_config_file_that_is_no_address_stops_the_start(stigmer: Stigmer) -> None:
    """A YAML number (``metrics_address: 9464``) or a port alone is refused naming the setting, before
    anything is bound, not served on an address nobody asked for."""
    stigmer.home.mkdir(parents=True, exist_ok=True)
    serve = ("serve", "--address", f"127.0.0.1:{free_port()}", "--data-dir", str(stigmer.data_dir))
    (stigmer.home / "config.yaml").write_text("server:\n  metrics_address: 9464\n")
    assert "server.metrics_address must be HOST:PORT, not 9464" in stigmer.fails(*serve)
    (stigmer.home / "config.yaml").write_text("server:\n  metrics_address: '9464'\n")
    assert stigmer.fails(*serve) == (
        "cannot serve metrics on '9464': give HOST:PORT (a port from 0 to 65535), as 127.0.0.1:9464"
    )
    flag = stigmer.fails(*serve, "--metrics-address", "127.0.0.1:http")
    assert (
        flag == "cannot serve metrics on '127.0.0.1:http': give HOST:PORT (a port from 0 to 65535), as 127.0.0.1:9464"
    )
    assert not (stigmer.data_dir / "data.mdb").exists()


def test_an_editors_export_asks_nothing_its_role_is_refused(stigmer: Stigmer, stigmer_store: str | None) -> None:
    """``export --all`` asked every kind never exported whether it held objects, API tokens too:
    an editor's routine backup left a ``denied:`` line in the daemon's log each time, noise to
    anyone alerting on denials. A kind whose list the caller's roles do not allow is not asked."""
    from stigmer_core.cli.daemon import Files

    stigmer.store = stigmer_store
    admin = stigmer.ok("token", "create", "--org", "acme", "--role", "admin", "--name", "admin").strip()
    editor = stigmer.ok("token", "create", "--org", "acme", "--role", "editor", "--name", "backups").strip()
    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    stigmer.ok("login", "--endpoint", daemon, "--token", editor)
    stigmer.ok("apply", "-f", "-", input=CODER)
    exported = stigmer("export", "--all")
    assert exported.code == 0 and "coder" in exported.out, exported.err
    log = Files(stigmer.data_dir).log_file.read_text()
    assert "denied:" not in log, log
    stigmer.ok("login", "--endpoint", daemon, "--token", admin)  # an admin is told of the tokens left out
    assert "not exported, by their kinds' declarations (run-time records, credentials): apitokens" in (
        stigmer("export", "--all").err
    )
