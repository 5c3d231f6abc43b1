"""A ``KindClient`` answers with its kind's resource class, as a type checker sees it: before, every
method was typed ``Message``, so an application's ``client.get(id).spec`` failed its own mypy run.
mypy is run here over a program such as a user writes, against this package as installed."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy comes with the dev extra; the protobuf 7 run installs only test")

PROGRAM = """
import grpc
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.kind_client import KindClient

def use(channel: grpc.Channel) -> None:
    typed = KindClient(channel, agent_pb2.Agent)
    reveal_type(typed.create(agent_pb2.Agent()))
    reveal_type(typed.get("agt_x"))
    reveal_type(next(typed.list_all()))
    instructions: str = typed.get("agt_x").spec.instructions
    named = KindClient[agent_pb2.Agent](channel, "Agent")
    reveal_type(named.apply(agent_pb2.Agent()))
    plain = KindClient(channel, "Agent")
    reveal_type(plain.delete("agt_x"))
    typed.get("agt_x").no_such_field
"""


def test_a_kind_client_answers_with_its_resource_class(tmp_path: Path) -> None:
    program = tmp_path / "app.py"
    program.write_text(PROGRAM)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    out, err, _ = api.run([str(program), "--config-file", str(config), "--cache-dir", str(tmp_path / "cache")])
    revealed = [line.split("Revealed type is ", 1)[1] for line in out.splitlines() if "Revealed type is" in line]
    agent = '"stigmer_core.api.agentic.agent.v1.agent_pb2.Agent"'
    assert revealed == [agent, agent, agent, agent, '"google.protobuf.message.Message"'], out + err
    # the app's own errors: an editable install's package is checked as source, which a wheel's is not
    errors = [line for line in out.splitlines() if line.startswith(str(program)) and ": error:" in line]
    assert len(errors) == 1 and '"Agent" has no attribute "no_such_field"' in errors[0], out
