"""One process holds stigmer_core, stigmer-apis and stigmer-sdk: the
``buf/validate/validate.proto`` both register is the same file, in either
import order, and what the SDK sends reaches the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stigmer import AgentInput, StigmerClient
from stigmer_core import Application, Phase, RequestContext, hookimpl, step
from stigmer_core.kinds.declaration import KindDeclaration
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server

pytestmark = pytest.mark.timeout(60)

_CHECK = """
import importlib, sys
modules = [importlib.import_module(name) for name in sys.argv[1:]]
ours = sys.modules["stigmer_core.api.buf.validate.validate_pb2"].DESCRIPTOR
theirs = sys.modules["buf.validate.validate_pb2"].DESCRIPTOR
assert ours.serialized_pb == theirs.serialized_pb, "two different validate.proto files"
print("ok")
"""
ORDER = [
    "stigmer_core.api.buf.validate.validate_pb2",
    "stigmer_core.application",
    "buf.validate.validate_pb2",
    "ai.stigmer.agentic.agent.v1.api_pb2",
    "stigmer",
]


@pytest.mark.parametrize("modules", [ORDER, ORDER[::-1]], ids=["ours-first", "theirs-first"])
def test_both_validate_modules_load_in_one_process(modules: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, *modules], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_sdk_api_key_reaches_the_authorize_phase(tmp_path: Path) -> None:
    """What an authorization plugin would check: the SDK sends its key as a bearer token."""
    seen: list[tuple[str, str]] = []

    @step(Phase.AUTHORIZE, name="record_caller")
    def record_caller(ctx: RequestContext) -> None:
        header = dict(ctx.metadata).get("authorization", "")
        seen.append((ctx.kind.name, str(header)))

    class Recorder:
        @hookimpl
        def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
            return [record_caller]

    pm = plugin_manager(plugins=[Recorder()])
    app = Application.open(tmp_path / "data", pm=pm, durable=False)
    server = Server(app, "127.0.0.1:0", max_workers=4)
    server.start()
    try:
        with StigmerClient("sk_test_secret", base_url=server.address, insecure=True) as client:
            client.agents.create(AgentInput(name="Support Bot", org="acme", instructions="Answer kindly, always."))
    finally:
        server.stop(grace=1)
        app.close()
    assert seen == [("StigmerAgent", "Bearer sk_test_secret")]
