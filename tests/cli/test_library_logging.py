"""A refused call's ``denied:`` line goes to the daemon's log, and to a Python application's stderr
only through logging the application set up itself.

The library set up no handler of its own, so in an application that set up none (``connect``
to a data directory no daemon holds) logging's last resort printed every refusal's line on the
application's stderr. The daemon's log, which an operator reads for those lines
(docs/security.md, Audit), must keep them as it did.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from stigmer_core.cli.daemon import Files

from .conftest import TIMEOUT, Stigmer

APP = """
import sys

import grpc

from stigmer_core import connect
from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc

data_dir, token, logs = sys.argv[1:]
if logs == "configured":
    import logging

    logging.basicConfig()
with connect(data_dir=data_dir, token=token) as client:
    assert client.in_process
    commands = client.stub(service_pb2_grpc.AgentCommandControllerStub)
    try:
        commands.create(agent_pb2.Agent(metadata={"name": "bot"}, spec={"instructions": "hi"}), timeout=30)
    except grpc.RpcError as exc:
        print(exc.code().name)
"""


def _application(stigmer: Stigmer, token: str, logs: str) -> subprocess.CompletedProcess[str]:
    """A Python program's refused create, the store opened in its own process."""
    return subprocess.run(
        [sys.executable, "-c", APP, str(stigmer.data_dir), token, logs],
        capture_output=True,
        text=True,
        env=stigmer.env(),
        timeout=TIMEOUT,
        check=False,
    )


def test_a_refusals_line_reaches_the_daemons_log_and_an_applications_logging_alone(stigmer: Stigmer) -> None:
    viewer = stigmer.ok("token", "create", "--org", "acme", "--role", "viewer", "--name", "reader").strip()
    quiet = _application(stigmer, viewer, "none")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "PERMISSION_DENIED\n", ""), quiet.stderr
    configured = _application(stigmer, viewer, "configured")
    assert configured.stdout == "PERMISSION_DENIED\n"
    assert "WARNING:stigmer_core.controller:denied: principal=token:acme/reader " in configured.stderr

    stigmer.home.joinpath("config.yaml").write_text(yaml.safe_dump({"server": {"require_auth": True}}))
    daemon = stigmer.start().address
    refused = stigmer("get", "agents", "--backend", "remote", "--endpoint", daemon)
    assert refused.code == 1 and "denied:" not in refused.err, refused.err
    logged = Files(stigmer.data_dir).log_file.read_text()
    assert "WARNING stigmer_core.controller: denied: principal=(anonymous " in logged, logged


PLUGIN_APP = """
import logging
import sys

import stigmer_plugins.shared_key  # the first-party kinds' logger, as a key warning uses it

logging.getLogger("stigmer_plugins.secrets").warning("made a new secret key in %s", sys.argv[1])
if sys.argv[2] == "configured":
    logging.basicConfig()
    logging.getLogger("stigmer_plugins.secrets").warning("made a new secret key in %s", sys.argv[1])
"""


def test_the_first_party_kinds_warnings_follow_the_applications_logging_too() -> None:
    """A new secret key's warning (``stigmer_plugins``) reached an application's stderr through
    logging's last resort, as ``stigmer_core``'s did."""
    bare, configured = (
        subprocess.run(
            [sys.executable, "-c", PLUGIN_APP, "/tmp/k", logs], capture_output=True, text=True, timeout=TIMEOUT
        )
        for logs in ("none", "configured")
    )
    assert bare.returncode == 0 and bare.stderr == "", bare.stderr
    assert configured.stderr.count("made a new secret key in /tmp/k") == 1, configured.stderr
