"""The stateful contract for ExecutionContext, on the in-process channel and over the network.

A context is derived data: the server creates it with its execution and
refuses create, apply and update from clients (FAILED_PRECONDITION, after
the request's own validation). So this contract replaces the write rules of
the standard one: contexts come from creating AgentExecutions with random
runtime values; executions end (complete, fail, cancel) or are deleted at
random; and get, getByReference, list and delete are checked against a
model that knows which execution is still running. The standard list,
delete_missing and create_invalid rules run unchanged.
"""

from __future__ import annotations

import string
from typing import Any

import grpc
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agentexecution.v1 import agentexecution_pb2 as ae
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.testing import contract_tests
from stigmer_core.testing import strategies as s
from stigmer_core.testing.contract import DEFAULT_ORG, KindContract
from stigmer_plugins.secrets import REDACTED

KEYS = ("A", "B", "TOKEN", "db.url")
runtime_values = st.dictionaries(
    st.sampled_from(KEYS), st.tuples(st.text(alphabet=string.ascii_letters + string.digits, max_size=12), st.booleans())
)


class ExecutionContextContract(KindContract):
    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, str] = {}
        self.execution_of: dict[str, str] = {}
        self.live: set[str] = set()
        self.clear: dict[str, dict[str, tuple[str, bool]]] = {}
        self.executions = self.client_for("AgentExecution")

    def session_for(self, org: str) -> str:
        if org not in self.sessions:
            agent = agent_pb2.Agent()
            agent.metadata.name = f"agent of {org}"
            agent.metadata.org = org
            created: Any = self.client_for("Agent").create(agent)
            session = session_pb2.Session()
            session.metadata.name = f"session of {org}"
            session.metadata.org = org
            session.spec.agent_instance_id = created.status.default_instance_id
            self.sessions[org] = self.client_for("Session").create(session).metadata.id  # type: ignore[attr-defined]
        return self.sessions[org]

    def _shown(self, context_id: str) -> Any:
        """The context as every read but a live get shows it."""
        return self._expect_ok(lambda: self.client.get_by_reference(id=context_id))

    # -- the server creates contexts; clients cannot ------------------------------
    @rule(org=st.sampled_from(s.ORGS), name=s.names, values=runtime_values)
    def create(self, org: str, name: str, values: dict[str, tuple[str, bool]]) -> None:  # type: ignore[override]
        effective = org or DEFAULT_ORG
        execution = ae.AgentExecution()
        execution.metadata.name = f"{name} {len(self.execution_of)}"  # execution slugs stay unique
        execution.metadata.org = org
        execution.spec.session_id = self.session_for(effective)
        execution.spec.message = "go"
        for key, (value, secret) in values.items():
            execution.spec.runtime_env[key].value = value
            execution.spec.runtime_env[key].is_secret = secret
        made = self.executions.create(execution)
        context_id = made.status.execution_context_id  # type: ignore[attr-defined]
        shown = self._shown(context_id)
        assert shown.metadata.org == effective and shown.metadata.slug == made.metadata.id  # type: ignore[attr-defined]
        assert shown.spec.execution_id == made.metadata.id  # type: ignore[attr-defined]
        assert {k: (v.value, v.is_secret) for k, v in shown.spec.data.items()} == {
            k: (REDACTED if secret else value, secret) for k, (value, secret) in values.items()
        }
        self.model[context_id] = shown
        self.execution_of[context_id] = made.metadata.id  # type: ignore[attr-defined]
        self.clear[context_id] = dict(values)
        self.live.add(context_id)

    def _refused(self, call: Any, obj: Any) -> None:
        self._expect_code(grpc.StatusCode.FAILED_PRECONDITION, call, obj)

    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names, data=st.data())
    def apply(self, org: str, slug: str, name: str, data: st.DataObject) -> None:  # type: ignore[override]
        obj = self._build(org, slug, name, {}, [], data.draw(s.specs(self.kind)))
        self._refused(self.client.apply, obj)

    @precondition(lambda self: bool(self.model))
    @rule(name=s.names, data=st.data())
    def update(self, name: str, data: st.DataObject) -> None:  # type: ignore[override]
        target = self.model[data.draw(st.sampled_from(sorted(self.model)))]
        obj = self.kind.resource_cls()
        obj.CopyFrom(target)
        obj.metadata.name = name  # type: ignore[attr-defined]
        self._refused(self.client.update, obj)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def rewrite_unchanged(self, data: st.DataObject) -> None:
        """Even an update that changes nothing is refused."""
        self.update(name=self.model[data.draw(st.sampled_from(sorted(self.model)))].metadata.name, data=data)  # type: ignore[attr-defined]

    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names)
    def update_missing(self, org: str, slug: str, name: str) -> None:
        self._refused(self.client.update, self._build(org, slug, name, {}, [], None))

    # -- executions end or go away ------------------------------------------------------
    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), how=st.sampled_from(["complete", "fail", "cancel"]))
    def end_execution(self, data: st.DataObject, how: str) -> None:
        context_id = data.draw(st.sampled_from(sorted(self.live)))
        execution_id = self.execution_of[context_id]
        if how == "cancel":
            self.executions.call("cancel", ae.CancelAgentExecutionInput(id=execution_id))
        else:
            for phase in (2, 3) if how == "complete" else (4,):
                status = ae.AgentExecutionStatus(phase=phase)  # type: ignore[arg-type]
                self.executions.call(
                    "updateStatus", ae.AgentExecutionUpdateStatusInput(execution_id=execution_id, status=status)
                )
        self.live.discard(context_id)
        ended = self._expect_ok(self.client.get, context_id)
        assert ended == self._shown(context_id), "once the run ended, get shows what every read shows"
        assert {k: v.value for k, v in ended.spec.data.items()} == {
            k: (REDACTED if secret else value) for k, (value, secret) in self.clear[context_id].items()
        }
        self.model[context_id] = ended

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete_execution(self, data: st.DataObject) -> None:
        context_id = data.draw(st.sampled_from(sorted(self.model)))
        self.executions.delete(self.execution_of[context_id])
        self.model.pop(context_id)
        self.live.discard(context_id)
        self._expect_code(grpc.StatusCode.NOT_FOUND, self.client.get, context_id)

    # -- reads and deletes ----------------------------------------------------------------
    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        context_id = data.draw(st.sampled_from(sorted(self.model)))
        got = self._expect_ok(self.client.get, context_id)
        if context_id in self.live:
            assert {k: (v.value, v.is_secret) for k, v in got.spec.data.items()} == self.clear[context_id]
            assert got.metadata == self.model[context_id].metadata  # type: ignore[attr-defined]
        else:
            assert got == self.model[context_id]

    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), with_kind=st.booleans(), data=st.data())
    def get_by_reference(self, org: str, slug: str, with_kind: bool, data: st.DataObject) -> None:
        kind = self.kind.name if with_kind else ""
        self._expect_code(
            grpc.StatusCode.NOT_FOUND, lambda: self.client.get_by_reference(org=org, slug=slug, kind=kind)
        )
        if self.model:
            context_id = data.draw(st.sampled_from(sorted(self.model)))
            expected = self.model[context_id]
            meta: Any = expected.metadata  # type: ignore[attr-defined]
            got = self._expect_ok(lambda: self.client.get_by_reference(org=meta.org, slug=meta.slug, kind=kind))
            assert got == expected

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        context_id = data.draw(st.sampled_from(sorted(self.model)))
        if context_id in self.live:
            self._expect_code(grpc.StatusCode.FAILED_PRECONDITION, self.client.delete, context_id)
            return
        got = self._expect_ok(self.client.delete, context_id)
        assert got == self.model.pop(context_id), "delete returns the object as every read shows it"
        self._expect_code(grpc.StatusCode.NOT_FOUND, self.client.get, context_id)


TestExecutionContextInProcess, TestExecutionContextNetwork = contract_tests(
    "ExecutionContext", base=ExecutionContextContract
)
