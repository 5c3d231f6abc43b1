"""Building agents, sessions and executions for the execution-kind tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import grpc

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.kind_client import KindClient

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = 1, 2, 3, 4, 5


@attrs.frozen
class Kinds:
    agents: KindClient
    instances: KindClient
    sessions: KindClient
    executions: KindClient
    contexts: KindClient
    environments: KindClient

    @classmethod
    def on(cls, app: Application, channel: grpc.Channel) -> Kinds:
        def client(name: str) -> KindClient:
            return KindClient(channel, app.registry.kind(name))

        return cls(
            client("Agent"),
            client("AgentInstance"),
            client("Session"),
            client("AgentExecution"),
            client("ExecutionContext"),
            client("Environment"),
        )

    def agent(self, name: str = "bot", *, org: str = "", env_slugs: Sequence[str] = ()) -> Any:
        agent = agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org))
        for slug in env_slugs:
            agent.spec.environment_refs.add(slug=slug)
        return self.agents.create(agent)

    def session(self, instance_id: str, name: str = "chat", *, org: str = "", tags: Sequence[str] = ()) -> Any:
        session = session_pb2.Session(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org, tags=tags))
        session.spec.agent_instance_id = instance_id
        return self.sessions.create(session)

    def environment(self, name: str, values: Mapping[str, tuple[str, bool]], *, org: str = "") -> Any:
        env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org))
        for key, (value, secret) in values.items():
            env.spec.data[key].value = value
            env.spec.data[key].is_secret = secret
        return self.environments.create(env)

    def execution(
        self,
        name: str = "run",
        *,
        session_id: str = "",
        agent_id: str = "",
        message: str = "hello",
        runtime_env: Mapping[str, tuple[str, bool]] | None = None,
        org: str = "",
        tags: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
    ) -> Any:
        execution = ae.AgentExecution(
            metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org, tags=tags, labels=labels or {})
        )
        execution.spec.session_id = session_id
        execution.spec.agent_id = agent_id
        execution.spec.message = message
        for key, (value, secret) in (runtime_env or {}).items():
            execution.spec.runtime_env[key].value = value
            execution.spec.runtime_env[key].is_secret = secret
        return self.executions.create(execution)

    def report(self, execution_id: str, phase: int = 0, *messages: str, error: str = "") -> Any:
        status = ae.AgentExecutionStatus(phase=phase)  # type: ignore[arg-type]
        for content in messages:
            status.messages.add(type=ae.MESSAGE_AI, content=content)
        if error:
            status.error.code = "ERROR"
            status.error.message = error
        return self.executions.call(
            "updateStatus", ae.AgentExecutionUpdateStatusInput(execution_id=execution_id, status=status)
        )

    def cancel(self, execution_id: str, reason: str = "") -> Any:
        return self.executions.call("cancel", ae.CancelAgentExecutionInput(id=execution_id, reason=reason))


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code ``call`` fails with (an AssertionError when it succeeds)."""
    try:
        got = call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    raise AssertionError(f"expected an error, got {got}")


def details_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        got = call()
    except grpc.RpcError as exc:
        return exc.code(), str(exc.details())
    raise AssertionError(f"expected an error, got {got}")


def drive_to(kinds: Kinds, execution_id: str, phase: int) -> None:
    """Move a PENDING execution to ``phase`` along legal moves."""
    if phase == PENDING:
        return
    if phase in (IN_PROGRESS, COMPLETED):
        kinds.report(execution_id, IN_PROGRESS)
    if phase != IN_PROGRESS:
        kinds.report(execution_id, phase)
