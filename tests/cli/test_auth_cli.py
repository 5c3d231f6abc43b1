"""``stigmer token``, ``login``, ``whoami`` and ``serve``'s refusal to be open, through the real command."""

from __future__ import annotations

import yaml

from .conftest import Stigmer, free_port
from .test_resources import CODER


def test_first_token_in_process_then_login_to_a_server_that_requires_tokens(stigmer: Stigmer) -> None:
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
    assert saved["remote"] == {"endpoint": daemon, "token": token} and saved["org"] == "acme"
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
    assert stigmer.fails("get", "agent") == "the API token has been revoked"


def test_serve_refuses_a_public_address_without_tls_and_tokens(stigmer: Stigmer) -> None:
    error = stigmer.fails("serve", "--address", "0.0.0.0:0", "--data-dir", str(stigmer.data_dir))
    assert error.startswith("refusing to listen on 0.0.0.0:0") and "--tls-cert" in error and "--require-auth" in error
    assert not stigmer.data_dir.exists(), "refused before touching anything"
    error = stigmer.fails("serve", "--address", f"10.0.0.1:{free_port()}", "--require-auth")
    assert "no TLS" in error and "no authentication" not in error


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
