"""WorkflowExecution: creation, its ExecutionContext, immutability, indexes, deletes — on both paths."""

from __future__ import annotations

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.environment.v1 import service_pb2_grpc as environment_grpc
from stigmer_core.api.agentic.executioncontext.v1 import executioncontext_pb2
from stigmer_core.api.agentic.executioncontext.v1 import service_pb2_grpc as context_grpc
from stigmer_core.api.agentic.workflowexecution.v1 import workflowexecution_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.testing.inspect import key_families, raw_keys
from stigmer_plugins.lifecycle import CANCELLED, COMPLETED, IN_PROGRESS, PENDING
from stigmer_plugins.secrets import REDACTED
from tests.workflow_helpers import Executions, Stubs, execution, instance, report, workflow

SECRET = "hunter2-do-not-leak"


def _code(err: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    code: grpc.StatusCode = err.value.code()
    return code


def _contexts(channel: grpc.Channel) -> context_grpc.ExecutionContextQueryControllerStub:
    return context_grpc.ExecutionContextQueryControllerStub(channel)


def _context_of(channel: grpc.Channel, execution_id: str) -> executioncontext_pb2.ExecutionContext:
    page = _contexts(channel).list(executioncontext_pb2.ListExecutionContextsRequest(execution_id=execution_id))
    assert len(page.entries) == 1
    found: executioncontext_pb2.ExecutionContext = page.entries[0]
    return found


def test_runs_a_workflow_by_its_default_instance_or_an_instance(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    extra = stubs.instances.create(instance("extra", wf.metadata.id))
    by_workflow = runs.create(execution("by workflow", workflow_id=wf.metadata.id))
    assert by_workflow.spec.workflow_instance_id == wf.status.default_instance_id
    assert by_workflow.spec.workflow_id == wf.metadata.id
    by_instance = runs.create(execution("by instance", instance_id=extra.metadata.id))
    assert by_instance.spec.workflow_id == wf.metadata.id
    both = runs.create(execution("both", workflow_id=wf.metadata.id, instance_id=extra.metadata.id))
    assert both.spec.workflow_instance_id == extra.metadata.id
    for run in (by_workflow, by_instance, both):
        assert run.status.phase == PENDING
        assert [(t.task_name, t.task_kind, t.phase) for t in run.status.tasks] == [
            ("fetch", "call", PENDING),
            ("route", "set", PENDING),
        ]
        assert run.metadata.id.startswith("wfx-")


def test_create_refuses_what_it_cannot_run(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow("One"))
    other = stubs.workflows.create(workflow("Two"))
    with pytest.raises(grpc.RpcError) as err:
        runs.create(execution("nothing"))
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(err.value).violations] == ["spec.workflow_instance_id"]  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        runs.create(execution("mismatch", workflow_id=other.metadata.id, instance_id=wf.status.default_instance_id))
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT and "spec.workflow_id" in err.value.details()
    for bad in (
        execution("ghost", workflow_id="wfl-01arz3ndektsv4rrffq69g5fav"),
        execution("ghost instance", instance_id="wfi-01arz3ndektsv4rrffq69g5fav"),
        execution("other org", workflow_id=wf.metadata.id, org="acme"),
        execution("other org instance", instance_id=wf.status.default_instance_id, org="acme"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            runs.create(bad)
        assert _code(err) == grpc.StatusCode.NOT_FOUND, bad.metadata.name
        assert "spec.workflow" in err.value.details()


def test_create_makes_the_context_in_the_same_transaction(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    envs = environment_grpc.EnvironmentCommandControllerStub(stigmer_channel)
    base = envs.create(
        environment_pb2.Environment(
            metadata=metadata_pb2.ApiResourceMetadata(name="base"),
            spec=environment_pb2.EnvironmentSpec(
                data={
                    "REGION": environment_pb2.EnvironmentValue(value="eu"),
                    "MODE": environment_pb2.EnvironmentValue(value="slow"),
                }
            ),
        )
    )
    wf = stubs.workflows.create(workflow())
    deployed = workflowinstance_pb2.WorkflowInstance()
    deployed.CopyFrom(instance("prod", wf.metadata.id))
    deployed.spec.environment_refs.add(slug=base.metadata.slug)
    prod = stubs.instances.create(deployed)
    commits = stigmer_app.store.commits  # type: ignore[attr-defined]
    run = runs.create(
        execution(
            "with env", instance_id=prod.metadata.id, runtime_env={"MODE": ("fast", False), "TOKEN": (SECRET, True)}
        )
    )
    assert stigmer_app.store.commits == commits + 1  # type: ignore[attr-defined]
    assert run.spec.runtime_env["TOKEN"].value == REDACTED and run.spec.runtime_env["TOKEN"].is_secret
    assert run.spec.runtime_env["MODE"].value == "fast"
    context = _context_of(stigmer_channel, run.metadata.id)
    assert [(o.kind, o.id) for o in context.metadata.owner_references] == [("WorkflowExecution", run.metadata.id)]
    assert context.spec.execution_kind == "WorkflowExecution"
    assert list(context.spec.environment_ids) == [base.metadata.id]
    values = {key: (item.value, item.source) for key, item in context.spec.data.items()}
    assert values == {
        "REGION": ("eu", base.metadata.id),
        "MODE": ("fast", "runtime"),  # the run's value on top of the environment's
        "TOKEN": (REDACTED, "runtime"),  # list redacts
    }
    # the runner's one way to the clear value, while the run is live
    got = _contexts(stigmer_channel).get(executioncontext_pb2.ExecutionContextId(value=context.metadata.id))
    assert got.spec.data["TOKEN"].value == SECRET
    assert not any(SECRET.encode() in value for _, value in _raw_items(stigmer_app))


def _raw_items(app: Application) -> list[tuple[bytes, bytes]]:
    with app.store.read() as txn:
        return list(txn.scan(b""))


def test_a_missing_environment_leaves_nothing_behind(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    broken = instance("broken", wf.metadata.id)
    broken.spec.environment_refs.add(slug="nowhere")
    made = stubs.instances.create(broken)
    before = key_families(stigmer_app.store)
    with pytest.raises(grpc.RpcError) as err:
        runs.create(execution("doomed", instance_id=made.metadata.id))
    assert _code(err) == grpc.StatusCode.NOT_FOUND and "nowhere" in err.value.details()
    assert key_families(stigmer_app.store) == before


def test_secret_runtime_values_appear_in_no_response(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    run = runs.create(execution("secretive", workflow_id=wf.metadata.id, runtime_env={"TOKEN": (SECRET, True)}))
    stream = runs.subscribe(run.metadata.id)
    responses = [
        run,
        runs.get(run.metadata.id),
        runs.report(run.metadata.id, report(IN_PROGRESS)),
        *runs.list_all(workflowexecution_pb2.ListWorkflowExecutionsRequest()),
        *runs.list_all(
            workflowexecution_pb2.ListWorkflowExecutionsByWorkflowRequest(workflow_id=wf.metadata.id), "listByWorkflow"
        ),
        runs.queries.getByReference(metadata_pb2.ApiResourceReference(slug=run.metadata.slug)),
        runs.cancel(run.metadata.id, "enough"),
        *list(stream),
        runs.delete(run.metadata.id),
    ]
    assert len(responses) >= 9
    for response in responses:
        assert SECRET.encode() not in response.SerializeToString()
    assert not any(SECRET.encode() in key + value for key, value in _raw_items(stigmer_app))


def test_spec_is_immutable_and_apply_of_the_same_document_changes_nothing(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    document = execution("nightly", workflow_id=wf.metadata.id, runtime_env={"TOKEN": (SECRET, True)})
    first = runs.commands.apply(document)
    assert runs.commands.apply(document) == first
    changed = workflowexecution_pb2.WorkflowExecution()
    changed.CopyFrom(first)
    changed.spec.trigger_message = "something else"
    with pytest.raises(grpc.RpcError) as err:
        runs.commands.update(changed)
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(err.value).violations] == ["spec"]  # type: ignore[attr-defined]
    relabelled = workflowexecution_pb2.WorkflowExecution()
    relabelled.CopyFrom(first)
    relabelled.metadata.tags.append("reviewed")
    updated = runs.commands.update(relabelled)
    assert list(updated.metadata.tags) == ["reviewed"]
    assert updated.spec == first.spec
    assert updated.status.phase == first.status.phase and updated.status.tasks == first.status.tasks


def test_list_filters_by_phase_and_tags_from_indexes(stigmer_app: Application, stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    made = [
        runs.create(execution(f"run {i}", workflow_id=wf.metadata.id, tags=["nightly"] if i % 2 else ["adhoc"]))
        for i in range(7)
    ]
    for run in made[:3]:
        runs.report(run.metadata.id, report(IN_PROGRESS))
    runs.report(made[0].metadata.id, report(COMPLETED))
    expected = {
        PENDING: [r.metadata.id for r in made[3:]],
        IN_PROGRESS: [r.metadata.id for r in made[1:3]],
        COMPLETED: [made[0].metadata.id],
        CANCELLED: [],
    }
    for phase, ids in expected.items():
        for org in ("", "local"):
            request = workflowexecution_pb2.ListWorkflowExecutionsRequest(org=org, phase=phase, page_size=2)
            assert [r.metadata.id for r in runs.list_all(request)] == ids, (phase, org)
    nightly = workflowexecution_pb2.ListWorkflowExecutionsRequest(tags=["nightly"], page_size=2)
    assert [r.metadata.id for r in runs.list_all(nightly)] == [r.metadata.id for r in made[1::2]]
    both = workflowexecution_pb2.ListWorkflowExecutionsRequest(tags=["nightly"], phase=PENDING, page_size=1)
    assert [r.metadata.id for r in runs.list_all(both)] == [
        r.metadata.id for r in made[3::2] if "nightly" in r.metadata.tags
    ]
    # the phase index follows the execution: one entry per org scope, under its current phase only
    phase_keys = raw_keys(stigmer_app.store, b"x/workflowexecutions/phase/")
    assert len(phase_keys) == 2 * len(made)
    assert sum(b"EXECUTION_COMPLETED" in k for k in phase_keys) == 2


def test_list_by_workflow_takes_a_workflow_or_an_instance_id(stigmer_channel: grpc.Channel) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow("Main"))
    other = stubs.workflows.create(workflow("Other"))
    extra = stubs.instances.create(instance("extra", wf.metadata.id))
    on_default = [runs.create(execution(f"d{i}", workflow_id=wf.metadata.id)) for i in range(3)]
    on_extra = [runs.create(execution(f"e{i}", instance_id=extra.metadata.id)) for i in range(2)]
    runs.create(execution("elsewhere", workflow_id=other.metadata.id))

    def by(workflow_id: str) -> list[str]:
        request = workflowexecution_pb2.ListWorkflowExecutionsByWorkflowRequest(workflow_id=workflow_id, page_size=2)
        return [r.metadata.id for r in runs.list_all(request, "listByWorkflow")]

    assert by(wf.metadata.id) == [r.metadata.id for r in on_default + on_extra]
    assert by(extra.metadata.id) == [r.metadata.id for r in on_extra]
    assert by(wf.status.default_instance_id) == [r.metadata.id for r in on_default]
    assert by("wfl-01arz3ndektsv4rrffq69g5fav") == []
    with pytest.raises(grpc.RpcError) as err:
        runs.queries.listByWorkflow(workflowexecution_pb2.ListWorkflowExecutionsByWorkflowRequest())
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT


def test_live_runs_block_deleting_their_workflow_and_instance(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    extra = stubs.instances.create(instance("extra", wf.metadata.id))
    live = runs.create(execution("live", instance_id=extra.metadata.id))
    before = raw_keys(stigmer_app.store)
    with pytest.raises(grpc.RpcError) as err:
        stubs.delete_workflow(wf.metadata.id)
    assert _code(err) == grpc.StatusCode.FAILED_PRECONDITION and "still referenced" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stubs.instances.delete(workflowinstance_pb2.WorkflowInstanceId(value=extra.metadata.id))
    assert _code(err) == grpc.StatusCode.FAILED_PRECONDITION
    assert [k for k in raw_keys(stigmer_app.store) if not k.startswith((b"e/", b"m/"))] == [
        k for k in before if not k.startswith((b"e/", b"m/"))
    ]  # nothing was half-deleted
    runs.report(live.metadata.id, report(IN_PROGRESS))
    runs.report(live.metadata.id, report(COMPLETED))
    stubs.delete_workflow(wf.metadata.id)  # a finished run no longer blocks
    for gone in (wf.status.default_instance_id, extra.metadata.id):
        with pytest.raises(grpc.RpcError) as err:
            stubs.get_instance(gone)
        assert _code(err) == grpc.StatusCode.NOT_FOUND
    assert runs.get(live.metadata.id).status.phase == COMPLETED  # history outlives the workflow
    assert raw_keys(stigmer_app.store, f"q/{wf.metadata.id}".encode()) == []
    assert raw_keys(stigmer_app.store, f"q/{extra.metadata.id}".encode()) == []


def test_deleting_a_run_takes_its_context_and_index_entries(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs, runs = Stubs(stigmer_channel), Executions(stigmer_channel)
    wf = stubs.workflows.create(workflow())
    keep = runs.create(execution("keep", workflow_id=wf.metadata.id, tags=["t"]))
    doomed = runs.create(
        execution("doomed", workflow_id=wf.metadata.id, tags=["t", "u"], runtime_env={"K": ("v", False)})
    )
    context = _context_of(stigmer_channel, doomed.metadata.id)
    runs.report(doomed.metadata.id, report(IN_PROGRESS))
    before = key_families(stigmer_app.store)
    assert runs.delete(doomed.metadata.id).metadata.id == doomed.metadata.id
    after = key_families(stigmer_app.store)
    assert before["o/workflowexecutions"] - after["o/workflowexecutions"] == 1
    assert before["o/executioncontexts"] - after["o/executioncontexts"] == 1
    assert before["s/executioncontexts"] - after["s/executioncontexts"] == 1
    for object_id in (doomed.metadata.id, context.metadata.id):
        leftovers = [k for k in raw_keys(stigmer_app.store) if object_id.encode() in k and not k.startswith(b"e/")]
        assert leftovers == [], object_id
    # what the kept run indexes is all that is left of the kind's indexes
    assert len(raw_keys(stigmer_app.store, b"x/workflowexecutions/")) == 2 + 2 + 2  # phase, tag, workflow+instance
    assert runs.get(keep.metadata.id) == keep
    with pytest.raises(grpc.RpcError) as err:
        _contexts(stigmer_channel).get(executioncontext_pb2.ExecutionContextId(value=context.metadata.id))
    assert _code(err) == grpc.StatusCode.NOT_FOUND
