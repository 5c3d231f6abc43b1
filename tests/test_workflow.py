"""Workflow and WorkflowInstance end to end, on both paths."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from stigmer_core import Application, from_rpc_error
from stigmer_core.api.agentic.workflow.v1 import workflow_pb2
from stigmer_core.api.agentic.workflowinstance.v1 import workflowinstance_pb2
from stigmer_core.testing.inspect import key_families, raw_keys
from stigmer_plugins.workflow_validation import TASK_KINDS
from tests.workflow_helpers import Stubs, document, instance, task, workflow

Breaker = Callable[[workflow_pb2.WorkflowSpec], None]


def _violations(err: pytest.ExceptionInfo[grpc.RpcError]) -> list[str]:
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return [v.field for v in from_rpc_error(err.value).violations]  # type: ignore[attr-defined]


def _set_then(index: int, then: str) -> Breaker:
    def run(spec: workflow_pb2.WorkflowSpec) -> None:
        spec.tasks[index].flow.then = then

    return run


def _set_task(index: int, field: str, value: str) -> Breaker:
    def run(spec: workflow_pb2.WorkflowSpec) -> None:
        setattr(spec.tasks[index], field, value)

    return run


def _set_document(field: str, value: str) -> Breaker:
    def run(spec: workflow_pb2.WorkflowSpec) -> None:
        setattr(spec.document, field, value)

    return run


def _clear(field: str) -> Breaker:
    def run(spec: workflow_pb2.WorkflowSpec) -> None:
        spec.ClearField(field)

    return run


def _empty_export(spec: workflow_pb2.WorkflowSpec) -> None:
    spec.tasks[1].export.SetInParent()


RULES: list[tuple[str, Breaker, str]] = [
    ("no tasks", _clear("tasks"), "spec.tasks"),
    ("no document", _clear("document"), "spec.document"),
    ("no dsl", _set_document("dsl", ""), "spec.document.dsl"),
    ("dsl 2", _set_document("dsl", "2.0.0"), "spec.document.dsl"),
    ("no namespace", _set_document("namespace", ""), "spec.document.namespace"),
    ("bad namespace", _set_document("namespace", "Not OK"), "spec.document.namespace"),
    ("no name", _set_document("name", ""), "spec.document.name"),
    ("no version", _set_document("version", ""), "spec.document.version"),
    ("bad version", _set_document("version", "v1"), "spec.document.version"),
    ("duplicate task name", _set_task(2, "name", "fetch"), "spec.tasks[2].name"),
    ("empty task name", _set_task(2, "name", ""), "spec.tasks[2].name"),
    ("reserved task name", _set_task(0, "name", "end"), "spec.tasks[0].name"),
    ("unknown kind", _set_task(1, "kind", "teleport"), "spec.tasks[1].kind"),
    ("no kind", _set_task(0, "kind", ""), "spec.tasks[0].kind"),
    ("then names no task", _set_then(2, "nowhere"), "spec.tasks[2].flow.then"),
    ("export without as", _empty_export, "spec.tasks[1].export.as"),
]


def _three_tasks() -> workflow_pb2.Workflow:
    return workflow(tasks=[task("fetch", "call", then="route"), task("route", "switch"), task("notify", then="end")])


@pytest.mark.parametrize(("rule", "breaker", "field"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_names_its_field(stigmer_channel: grpc.Channel, rule: str, breaker: Breaker, field: str) -> None:
    stubs = Stubs(stigmer_channel)
    bad = _three_tasks()
    breaker(bad.spec)
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.create(bad)
    assert _violations(err) == [field], rule
    assert field in err.value.details()


def test_every_violation_is_reported_at_once(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    bad = _three_tasks()
    bad.spec.document.version = ""
    bad.spec.tasks[0].kind = "teleport"
    bad.spec.tasks[1].flow.then = "nowhere"
    bad.spec.tasks[2].name = "fetch"
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.create(bad)
    assert _violations(err) == [
        "spec.document.version",
        "spec.tasks[0].kind",
        "spec.tasks[1].flow.then",
        "spec.tasks[2].name",
    ]


def test_valid_flow_targets_and_every_kind_are_accepted(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    kinds = sorted(TASK_KINDS)
    tasks = [task(f"t{i}", kind, then=f"t{(i + 2) % len(kinds)}") for i, kind in enumerate(kinds)]
    tasks[0].flow.then = "continue"
    tasks[1].flow.then = "exit"
    tasks[2].flow.then = "end"
    setattr(tasks[3].export, "as", "${ . }")
    created = stubs.workflows.create(workflow(tasks=tasks))
    assert [t.kind for t in created.spec.tasks] == kinds
    assert created.spec.tasks[3].export == tasks[3].export


def test_update_and_apply_are_validated_too(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    created = stubs.workflows.create(workflow("Checked"))
    broken = workflow_pb2.Workflow()
    broken.CopyFrom(created)
    broken.spec.tasks[0].flow.then = "nowhere"
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.update(broken)
    assert _violations(err) == ["spec.tasks[0].flow.then"]
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.apply(broken)
    assert _violations(err) == ["spec.tasks[0].flow.then"]
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.apply(workflow("Brand New", tasks=[]))
    assert _violations(err) == ["spec.tasks"]
    assert stubs.workflow_query.get(workflow_pb2.WorkflowId(value=created.metadata.id)) == created


def test_create_makes_default_instance_in_same_transaction(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs = Stubs(stigmer_channel)
    commits = stigmer_app.store.commits  # type: ignore[attr-defined]
    revision_keys = len(raw_keys(stigmer_app.store, b"e/"))
    created = stubs.workflows.create(workflow("Support Flow"))
    assert stigmer_app.store.commits == commits + 1  # type: ignore[attr-defined]
    assert len(raw_keys(stigmer_app.store, b"e/")) == revision_keys + 2  # one event per object, no later update
    default_id = created.status.default_instance_id
    assert default_id.startswith("wfi-")
    default = stubs.get_instance(default_id)
    assert default.spec.workflow_id == created.metadata.id
    assert default.metadata.slug == "support-flow-default"
    assert default.metadata.org == created.metadata.org == "local"
    assert [(o.kind, o.id) for o in default.metadata.owner_references] == [("Workflow", created.metadata.id)]
    assert default.metadata.resource_version == created.metadata.resource_version  # written at one revision
    # a second workflow whose slug would collide gets a distinct default instance slug
    taken = stubs.instances.create(instance("other-default", created.metadata.id))
    assert taken.metadata.slug == "other-default"
    second = stubs.workflows.create(workflow("Other"))
    assert stubs.get_instance(second.status.default_instance_id).metadata.slug != taken.metadata.slug


def test_a_failed_default_instance_leaves_nothing_behind(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs = Stubs(stigmer_channel)
    before = key_families(stigmer_app.store)
    with pytest.raises(grpc.RpcError) as err:
        stubs.workflows.create(workflow("Broken", tasks=[task("a", then="b")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert key_families(stigmer_app.store) == before


def test_delete_cascades_to_every_instance_and_leaves_no_keys(
    stigmer_app: Application, stigmer_channel: grpc.Channel
) -> None:
    stubs = Stubs(stigmer_channel)
    keep = stubs.workflows.create(workflow("Keeper"))
    doomed = stubs.workflows.create(workflow("Doomed"))
    extra = stubs.instances.create(instance("extra", doomed.metadata.id, labels={"tier": "a"}))
    assert [(o.kind, o.id) for o in extra.metadata.owner_references] == [("Workflow", doomed.metadata.id)]
    before = key_families(stigmer_app.store)
    assert before["x/workflowinstances"] == 2  # extra's label, per org and across orgs
    deleted = stubs.delete_workflow(doomed.metadata.id)
    assert deleted.metadata.id == doomed.metadata.id
    for gone in (doomed.status.default_instance_id, extra.metadata.id):
        with pytest.raises(grpc.RpcError) as err:
            stubs.get_instance(gone)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    after = key_families(stigmer_app.store)
    assert before["o/workflows"] - after["o/workflows"] == 1
    assert before["s/workflows"] - after["s/workflows"] == 1
    assert before["o/workflowinstances"] - after["o/workflowinstances"] == 2
    assert before["s/workflowinstances"] - after["s/workflowinstances"] == 2
    assert after["x/workflowinstances"] == 0
    assert after["r/" + doomed.metadata.id] == 0
    assert after["q/" + doomed.metadata.id] == 0
    assert after["r/" + keep.metadata.id] == 1 and after["q/" + keep.metadata.id] == 1
    for object_id in (doomed.metadata.id, doomed.status.default_instance_id, extra.metadata.id):
        leftovers = [k for k in raw_keys(stigmer_app.store) if object_id.encode() in k and not k.startswith(b"e/")]
        assert leftovers == [], object_id
    assert stubs.get_instance(keep.status.default_instance_id).spec.workflow_id == keep.metadata.id


def test_instance_needs_a_workflow_of_its_org(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    created = stubs.workflows.create(workflow())
    for org, workflow_id in (("local", "wfl-01arz3ndektsv4rrffq69g5fav"), ("other", created.metadata.id)):
        with pytest.raises(grpc.RpcError) as err:
            stubs.instances.create(instance("orphan", workflow_id, org=org))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "spec.workflow_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stubs.instances.create(instance("unnamed", ""))
    assert _violations(err) == ["spec.workflow_id"]


def test_instance_keeps_its_workflow_and_owner(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    first = stubs.workflows.create(workflow("First"))
    second = stubs.workflows.create(workflow("Second"))
    forged = instance("mine", first.metadata.id)
    forged.metadata.owner_references.add(kind="Workflow", id=second.metadata.id)
    made = stubs.instances.create(forged)
    assert [(o.kind, o.id) for o in made.metadata.owner_references] == [("Workflow", first.metadata.id)]
    moved = workflowinstance_pb2.WorkflowInstance()
    moved.CopyFrom(made)
    moved.spec.workflow_id = second.metadata.id
    with pytest.raises(grpc.RpcError) as err:
        stubs.instances.update(moved)
    assert _violations(err) == ["spec.workflow_id"]
    described = workflowinstance_pb2.WorkflowInstance()
    described.CopyFrom(made)
    described.spec.description = "for prod"
    assert stubs.instances.update(described).spec.description == "for prod"


def test_default_instance_cannot_be_deleted_alone(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    created = stubs.workflows.create(workflow())
    with pytest.raises(grpc.RpcError) as err:
        stubs.instances.delete(workflowinstance_pb2.WorkflowInstanceId(value=created.status.default_instance_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "default instance" in err.value.details()
    refused = from_rpc_error(err.value)  # the reason an agent's default instance is refused with
    assert refused.reason == "DEFAULT_INSTANCE", refused.reason
    assert refused.metadata == {
        "kind": "WorkflowInstance",
        "id": created.status.default_instance_id,
        "workflowId": created.metadata.id,
    }
    extra = stubs.instances.create(instance("extra", created.metadata.id))
    assert stubs.instances.delete(workflowinstance_pb2.WorkflowInstanceId(value=extra.metadata.id)) == extra


def test_update_keeps_status_and_apply_is_idempotent(stigmer_channel: grpc.Channel) -> None:
    stubs = Stubs(stigmer_channel)
    first = stubs.workflows.apply(workflow("Applied"))
    assert stubs.workflows.apply(workflow("Applied")) == first
    changed = workflow("Applied", tasks=[task("only", "wait")])
    changed.status.default_instance_id = "wfi-forged"
    updated = stubs.workflows.apply(changed)
    assert updated.metadata.id == first.metadata.id
    assert [t.name for t in updated.spec.tasks] == ["only"]
    assert updated.status.default_instance_id == first.status.default_instance_id
    assert updated.metadata.resource_version > first.metadata.resource_version
    assert document() == updated.spec.document
