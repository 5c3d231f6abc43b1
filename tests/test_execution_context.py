"""ExecutionContext on both paths: how its values are resolved, encrypted at
rest, in clear only through get while its execution runs, and derived data
that clients cannot write."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application, FailedPrecondition, from_rpc_error
from stigmer_core.api.agentic.executioncontext.v1 import executioncontext_pb2 as ec
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.store import keys
from stigmer_plugins.secrets import REDACTED, secrets
from tests.agent_execution_support import COMPLETED, FAILED, IN_PROGRESS, Kinds, code_of, details_of, drive_to

DB_PASSWORD = "pg-pass-7f3a9c"
API_TOKEN = "tok-runtime-51be"


@pytest.fixture
def kinds(stigmer_app: Application, stigmer_channel: grpc.Channel) -> Kinds:
    return Kinds.on(stigmer_app, stigmer_channel)


def _stored(app: Application, context_id: str) -> ec.ExecutionContext:
    with app.store.read() as txn:
        raw = txn.get(keys.object_key("executioncontexts", context_id))
    assert raw is not None
    return ec.ExecutionContext.FromString(raw)


def _values(context: ec.ExecutionContext) -> dict[str, tuple[str, bool, str]]:
    return {k: (v.value, v.is_secret, v.source) for k, v in context.spec.data.items()}


def _execution_with_environments(kinds: Kinds) -> tuple[object, object, object]:
    base = kinds.environment(
        "base", {"REGION": ("eu-west-1", False), "DB_PASSWORD": ("old-pass", True), "LOG": ("info", False)}
    )
    prod = kinds.environment("prod", {"DB_PASSWORD": (DB_PASSWORD, True), "LOG": ("warn", False)})
    agent = kinds.agent(env_slugs=["base", "prod"])
    execution = kinds.execution(
        agent_id=agent.metadata.id,  # type: ignore[attr-defined]
        runtime_env={"LOG": ("debug", False), "API_TOKEN": (API_TOKEN, True)},
    )
    return base, prod, execution


def test_values_resolve_environments_in_order_then_runtime(kinds: Kinds) -> None:
    base, prod, execution = _execution_with_environments(kinds)
    context = kinds.contexts.get(execution.status.execution_context_id)  # type: ignore[attr-defined]
    assert _values(context) == {
        "REGION": ("eu-west-1", False, base.metadata.id),  # type: ignore[attr-defined]
        "DB_PASSWORD": (DB_PASSWORD, True, prod.metadata.id),  # type: ignore[attr-defined]
        "LOG": ("debug", False, "runtime"),
        "API_TOKEN": (API_TOKEN, True, "runtime"),
    }
    assert list(context.spec.environment_ids) == [base.metadata.id, prod.metadata.id]  # type: ignore[attr-defined]
    assert context.spec.execution_kind == "AgentExecution"
    assert [(o.kind, o.id) for o in context.metadata.owner_references] == [
        ("AgentExecution", execution.metadata.id)  # type: ignore[attr-defined]
    ]


def test_secrets_are_sealed_with_a_run_key_that_ends_with_the_run(kinds: Kinds, stigmer_app: Application) -> None:
    _, _, execution = _execution_with_environments(kinds)
    context_id = execution.status.execution_context_id  # type: ignore[attr-defined]
    keyring = secrets(stigmer_app.registry)
    scope = f"executioncontexts/{context_id}"
    stored = _stored(stigmer_app, context_id)
    with stigmer_app.store.read() as txn:
        run_box = keyring.run_box(txn, scope)
    assert run_box is not None
    for key, clear in (("DB_PASSWORD", DB_PASSWORD), ("API_TOKEN", API_TOKEN)):
        token = stored.spec.data[key].value
        assert token.startswith("enc:r1:") and clear not in token
        assert run_box.decrypt(token, f"{context_id}/{key}") == clear
        with pytest.raises(FailedPrecondition):  # not the data-directory key's
            keyring.master.decrypt(token, f"{context_id}/{key}")
    assert stored.spec.data["LOG"].value == "debug"
    drive_to(kinds, execution.metadata.id, COMPLETED)  # type: ignore[attr-defined]
    sealed = _stored(stigmer_app, context_id)
    assert sealed.spec.data["DB_PASSWORD"].value == REDACTED and sealed.spec.data["API_TOKEN"].value == REDACTED
    assert sealed.spec.data["REGION"].value == "eu-west-1", "non-secret values stay as a record of the run"
    with stigmer_app.store.read() as txn:
        assert keyring.run_box(txn, scope) is None, "the run key is destroyed with the run"
    assert keyring.runs.count() == 0


def test_deleting_a_live_execution_destroys_its_run_key(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id, runtime_env={"K": ("secret-k", True)})
    keyring = secrets(stigmer_app.registry)
    assert keyring.runs.count() == 1
    kinds.executions.delete(execution.metadata.id)
    assert code_of(lambda: kinds.contexts.get(execution.status.execution_context_id)) == grpc.StatusCode.NOT_FOUND
    assert keyring.runs.count() == 0


def test_a_run_without_secrets_makes_no_run_key(kinds: Kinds, stigmer_app: Application) -> None:
    agent = kinds.agent()
    kinds.execution(agent_id=agent.metadata.id, runtime_env={"K": ("plain", False)})
    assert secrets(stigmer_app.registry).runs.count() == 0


@pytest.mark.parametrize("end", [COMPLETED, FAILED, "cancel"])
def test_get_is_clear_only_while_the_execution_is_live(kinds: Kinds, end: object) -> None:
    _, _, execution = _execution_with_environments(kinds)
    execution_id, context_id = execution.metadata.id, execution.status.execution_context_id  # type: ignore[attr-defined]
    assert kinds.contexts.get(context_id).spec.data["API_TOKEN"].value == API_TOKEN
    kinds.report(execution_id, IN_PROGRESS)
    assert kinds.contexts.get(context_id).spec.data["API_TOKEN"].value == API_TOKEN
    if end == "cancel":
        kinds.cancel(execution_id)
    else:
        kinds.report(execution_id, end)  # type: ignore[arg-type]
    after = kinds.contexts.get(context_id)
    assert after.spec.data["API_TOKEN"].value == REDACTED and after.spec.data["DB_PASSWORD"].value == REDACTED
    assert after.spec.data["API_TOKEN"].is_secret


def test_every_other_read_is_redacted(kinds: Kinds) -> None:
    _, _, execution = _execution_with_environments(kinds)
    context_id = execution.status.execution_context_id  # type: ignore[attr-defined]
    listed = kinds.contexts.list_page(org="local").entries
    by_execution = kinds.contexts.call(
        "list",
        ec.ListExecutionContextsRequest(execution_id=execution.metadata.id),  # type: ignore[attr-defined]
    ).entries
    by_reference = kinds.contexts.get_by_reference(slug=execution.metadata.id)  # type: ignore[attr-defined]
    for context in (*listed, *by_execution, by_reference):
        assert context.metadata.id == context_id
        assert context.spec.data["API_TOKEN"].value == REDACTED
        assert context.spec.data["DB_PASSWORD"].value == REDACTED
        assert context.spec.data["LOG"].value == "debug"


def test_clients_cannot_write_a_context(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id)
    existing = kinds.contexts.get(execution.status.execution_context_id)
    forged = ec.ExecutionContext(metadata=metadata_pb2.ApiResourceMetadata(name="forged"))
    forged.spec.execution_id = execution.metadata.id
    for call in (kinds.contexts.create, kinds.contexts.apply, kinds.contexts.update):
        code, details = details_of(lambda c=call: c(forged))  # type: ignore[misc]
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "made by the server" in details
    changed = ec.ExecutionContext()
    changed.CopyFrom(existing)
    changed.spec.data["EXTRA"].value = "x"
    assert code_of(lambda: kinds.contexts.update(changed)) == grpc.StatusCode.FAILED_PRECONDITION
    bad = ec.ExecutionContext(metadata=metadata_pb2.ApiResourceMetadata(name=""))
    code, details = details_of(lambda: kinds.contexts.create(bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in details
    assert kinds.contexts.get(existing.metadata.id) == existing


def test_delete_waits_for_the_execution_to_end(kinds: Kinds) -> None:
    agent = kinds.agent()
    execution = kinds.execution(agent_id=agent.metadata.id, runtime_env={"K": ("secret-k", True)})
    context_id = execution.status.execution_context_id
    code, details = details_of(lambda: kinds.contexts.delete(context_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(
        f"execution context '{context_id}' belongs to AgentExecution '{execution.metadata.slug}' "
        f"({execution.metadata.id}), which is EXECUTION_PENDING and has not ended"
    ), details
    with pytest.raises(grpc.RpcError) as caught:
        kinds.contexts.delete(context_id)
    refused = from_rpc_error(caught.value)
    assert refused.reason == "RUN_LIVE" and refused.metadata == {
        "kind": "ExecutionContext",
        "id": context_id,
        "executionKind": "AgentExecution",
        "executionId": execution.metadata.id,
        "phase": "EXECUTION_PENDING",
    }
    kinds.report(execution.metadata.id, FAILED, error="boom")
    deleted = kinds.contexts.delete(context_id)
    assert deleted.spec.data["K"].value == REDACTED
    assert code_of(lambda: kinds.contexts.get(context_id)) == grpc.StatusCode.NOT_FOUND
    assert kinds.executions.get(execution.metadata.id).status.phase == FAILED


def test_environments_must_exist_in_the_execution_org(kinds: Kinds) -> None:
    kinds.environment("shared", {"A": ("1", False)}, org="acme")
    agent = kinds.agent(env_slugs=["shared"])
    code, details = details_of(lambda: kinds.execution(agent_id=agent.metadata.id))
    assert code == grpc.StatusCode.NOT_FOUND and "shared" in details
    kinds.environment("shared", {"A": ("2", False)})
    execution = kinds.execution(agent_id=agent.metadata.id)
    assert kinds.contexts.get(execution.status.execution_context_id).spec.data["A"].value == "2"


def test_a_secret_runtime_value_must_be_clear_at_create(kinds: Kinds) -> None:
    agent = kinds.agent()
    code, details = details_of(lambda: kinds.execution(agent_id=agent.metadata.id, runtime_env={"K": (REDACTED, True)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'spec.runtime_env["K"].value' in details


def test_an_unset_secret_refuses_the_run_unless_something_later_gives_the_key(kinds: Kinds) -> None:
    """An environment restored from a redacted export holds its secrets unset: no run gets them empty."""
    restored = kinds.environment("restored", {"DB_PASSWORD": (REDACTED, True), "REGION": ("eu", False)})
    assert list(restored.status.unset_secrets) == ["DB_PASSWORD"]
    agent = kinds.agent(env_slugs=["restored"])
    code, details = details_of(lambda: kinds.execution(agent_id=agent.metadata.id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'DB_PASSWORD'" in details and "'restored'" in details and "unset" in details
    assert kinds.executions.list_page(org="local").entries == [], "nothing of the refused run was written"

    # a runtime value for the key is what the run resolves to
    given = kinds.execution("given", agent_id=agent.metadata.id, runtime_env={"DB_PASSWORD": (DB_PASSWORD, True)})
    context = kinds.contexts.get(given.status.execution_context_id)
    assert _values(context)["DB_PASSWORD"] == (DB_PASSWORD, True, "runtime")

    # so is a later environment's value; an unset secret coming later wins over a set one, and is refused
    kinds.environment("override", {"DB_PASSWORD": (DB_PASSWORD, True)})
    later = kinds.agent("later", env_slugs=["restored", "override"])
    context = kinds.contexts.get(kinds.execution("later", agent_id=later.metadata.id).status.execution_context_id)
    assert context.spec.data["DB_PASSWORD"].value == DB_PASSWORD
    earlier = kinds.agent("earlier", env_slugs=["override", "restored"])
    refused = code_of(lambda: kinds.execution("earlier", agent_id=earlier.metadata.id))
    assert refused == grpc.StatusCode.FAILED_PRECONDITION

    # setting the secret in the environment lets every run through
    restored.spec.data["DB_PASSWORD"].value = DB_PASSWORD
    assert list(kinds.environments.update(restored).status.unset_secrets) == []
    context = kinds.contexts.get(kinds.execution("set", agent_id=agent.metadata.id).status.execution_context_id)
    assert _values(context)["DB_PASSWORD"] == (DB_PASSWORD, True, restored.metadata.id)
