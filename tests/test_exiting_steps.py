"""A step that raises SystemExit (a library calling ``sys.exit()``), KeyboardInterrupt, or any other
BaseException (asyncio.CancelledError) answers INTERNAL naming the step, and the daemon goes on
serving. A CancelledError was left unanswered until the client's deadline.

On LMDB a write's checks run on the asyncio server's event loop: such an exception ended the
loop's thread, and the daemon answered nothing ever again (health included) until killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.hookspecs import hookimpl
from stigmer_core.kinds.declaration import KindDeclaration
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import step
from tests.plugin_server_support import named_agent, served_with


def _exit_when_named(ctx: Any) -> None:
    name = ctx.request.metadata.name
    if name == "exit":
        sys.exit(3)
    if name == "interrupt":
        raise KeyboardInterrupt
    if name == "cancelled":  # a step's own (an asyncio helper it calls): not the call's cancel
        raise asyncio.CancelledError
    if name == "base":
        raise BaseException("odd")
    if name == "sigint":  # a person's Ctrl-C, arriving while the step runs
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


@step(Phase.PREPARE, name="exits_before")
def exits_before(ctx: Any) -> None:
    _exit_when_named(ctx)


@step(Phase.KIND, name="exits_inside")
def exits_inside(ctx: Any) -> None:  # in the writing transaction, on the group commit's leader
    if ctx.request.metadata.name == "exit inside":
        sys.exit(4)


class Exiting:
    @hookimpl
    def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
        return [exits_before, exits_inside] if kind.name == "Agent" and operation == "create" else []


@pytest.fixture(params=[0, 2], ids=["asyncio-server", "sync-server"])
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[grpc.Channel]:
    with served_with(tmp_path, Exiting(), request.param) as opened:
        yield opened


@pytest.mark.parametrize(
    ("name", "step_name", "raised"),
    [("exit", "exits_before", "SystemExit"), ("interrupt", "exits_before", "KeyboardInterrupt"),
     ("cancelled", "exits_before", "CancelledError"), ("base", "exits_before", "BaseException"),
     ("exit inside", "exits_inside", "SystemExit")],
)  # fmt: skip
def test_an_exiting_step_answers_internal_and_the_daemon_serves_on(
    channel: grpc.Channel, name: str, step_name: str, raised: str
) -> None:
    commands = agent_grpc.AgentCommandControllerStub(channel)
    for _ in range(2):  # and again: the first did not take the server down
        with pytest.raises(grpc.RpcError) as failed:
            commands.create(named_agent(name), timeout=10)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert f"step '{step_name}'" in failed.value.details() and raised in failed.value.details()
    made = commands.create(named_agent("fine"), timeout=10)
    assert agent_grpc.AgentQueryControllerStub(channel).get(agent_pb2.AgentId(value=made.metadata.id), timeout=10)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


_PROGRAM = """
import grpc, threading
from stigmer_core import Application, interrupts
from stigmer_core.plugins import plugin_manager
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from tests.test_exiting_steps import Exiting
from tests.plugin_server_support import named_agent

{setup}
app = Application.open({data!r}, durable=False, pm=plugin_manager(plugins=[Exiting()]))
commands = agent_grpc.AgentCommandControllerStub(app.channel())
{body}
try:
    commands.create(named_agent("sigint"))
except KeyboardInterrupt:
    print("ctrl-c: KeyboardInterrupt", flush=True)
commands.create(named_agent("fine"))
print("then: served", flush=True)
"""


def _program_says(data: Path, body: str, setup: str = "") -> list[str]:
    """What a program serving its store in process prints: ``body`` (with ``commands``, a stub),
    then a create whose step sends this process SIGINT, then one more create."""
    import subprocess

    script = _PROGRAM.format(setup=setup, data=str(data), body=textwrap.dedent(body))
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    return ran.stdout.splitlines()


def test_a_persons_ctrl_c_in_a_command_serving_its_store_in_process_stops_it(tmp_path: Path) -> None:
    """In a command's own process (the CLI's in-process store), a Ctrl-C while a step runs is the
    person's: answered INTERNAL as a step's fault, it failed the one write and the command went on
    to the next. Told apart by the SIGINT handler the command line installs (``interrupts``): a
    KeyboardInterrupt the code raises itself is still the step's fault, in any thread."""
    body = """
        said = []

        def refused(name):
            try:
                commands.create(named_agent(name))
            except grpc.RpcError as exc:
                said.append(exc.code().name)

        runner = threading.Thread(target=refused, args=("interrupt",))
        runner.start()
        runner.join()
        refused("interrupt")
        print("raised by the code:", *said, flush=True)
        """
    said = _program_says(tmp_path / "data", body, setup="interrupts.install()  # as the command line does")
    assert said == ["raised by the code: INTERNAL INTERNAL", "ctrl-c: KeyboardInterrupt", "then: served"], said


def test_a_persons_ctrl_c_reaches_a_program_using_the_library_in_process(tmp_path: Path) -> None:
    """A program calling in process from its main thread, which installed no handler of its own,
    got its Ctrl-C as the call's INTERNAL (``it raised KeyboardInterrupt``), in a unary call and in
    a stream, and never reached its ``except KeyboardInterrupt``. Its default SIGINT handler is
    now replaced by one that behaves the same and notes the signal; code raising
    KeyboardInterrupt itself is still the step's fault."""
    body = """
        try:
            commands.create(named_agent("interrupt"))
        except grpc.RpcError as exc:
            print("raised by the code:", exc.code().name, flush=True)
        """
    said = _program_says(tmp_path / "data", body)
    assert said == ["raised by the code: INTERNAL", "ctrl-c: KeyboardInterrupt", "then: served"], said


def test_a_persons_ctrl_c_while_a_program_waits_on_an_in_process_stream_reaches_it(tmp_path: Path) -> None:
    """A program blocked on an in-process watch (its main thread reading the next event) got its
    Ctrl-C as the stream's INTERNAL "internal error: KeyboardInterrupt": the stream handler
    answered every BaseException as a fault."""
    body = """
        import os, signal
        from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc

        stream = watch_pb2_grpc.WatchStub(app.channel()).Watch(watch_pb2.WatchRequest(kind="Agent"))
        next(stream)  # the bookmark: the watch is open
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            for _ in stream:
                pass
        except KeyboardInterrupt:
            print("watching: KeyboardInterrupt", flush=True)
        except grpc.RpcError as exc:
            print("watching:", exc.code().name, exc.details(), flush=True)
        """
    said = _program_says(tmp_path / "data", body)
    assert said[0] == "watching: KeyboardInterrupt", said
