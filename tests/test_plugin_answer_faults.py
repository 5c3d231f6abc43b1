"""A plugin's steps answering what they must not: a stream whose generator raises (SystemExit
too), an answer of the wrong type, an error built of the wrong parts, an update that changes
what the store's entries name. Each is answered with a clear status naming the rpc, the server
serves on, and nothing is half-written.

Through the asyncio server a local daemon runs, the sync server, and the in-process channel.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stigmer_core import Application, CustomOperation, KindDeclaration, errors, hookimpl
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds import reindex, usage
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep
from stigmer_core.plugins import plugin_manager
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store import open_store
from tests.gizmo_feed_kind import FEED_GIZMO
from tests.gizmo_kind import message
from tests.plugin_server_support import serving

GIZMO_ID = message("GizmoId")
FOLLOW = "/tests.gizmo.v1.GizmoFeedQueryController/follow"
PEEK = "/tests.gizmo.v1.GizmoFeedQueryController/peek"


def _stream(ctx: Any) -> None:
    """``follow``: a stream of the plugin's own generator, misbehaving as the id asks."""
    how = ctx.request.value
    sent: Any = FEED_GIZMO.resource()
    sent.metadata.name = "sent"

    def messages() -> Iterator[Any]:
        yield sent
        if how == "exit":
            sys.exit(3)
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "bug":
            raise ValueError("a bug of the plugin's")
        if how == "wrong":
            yield empty_pb2.Empty()

    ctx.response = 42 if how == "no stream" else messages()


def _peek(ctx: Any) -> None:
    """``peek``: a unary answer of the wrong type, or an error built of the wrong parts."""
    how = ctx.request.value
    refusals: dict[str, Exception] = {
        "from exception": errors.InvalidArgument(ValueError("spec.tag is bad")),  # type: ignore[arg-type]
        "pairs": errors.InvalidArgument("bad", [("spec.tag", "why")]),  # type: ignore[list-item]
        "number": errors.InvalidArgument.field("spec.tag", 5),  # type: ignore[arg-type]
        "none": errors.NotFound(None),  # type: ignore[arg-type]
        "metadata": errors.FailedPrecondition("x", metadata={1: 2}),  # type: ignore[dict-item]
    }
    if how in refusals:
        raise refusals[how]
    if how == "writes":  # a write from an rpc bound as a read: it failed on a missing method (AttributeError)
        ctx.store.keep("local", b"v/peeked", b"1")
    ctx.response = {"text": "a str", "message": empty_pb2.Empty()}.get(how)


def _answers_wrongly(ctx: Any) -> None:
    """A create's last step answering a str for the object named so."""
    if ctx.request.metadata.name == "wrong answer":
        ctx.response = "created"


def _moves(ctx: Any) -> None:
    """An update's step changing what the conventions fix, as ``spec.low`` asks."""
    how = {1: "id", 2: "org", 3: "slug", 5: "api_version"}.get(ctx.resource.spec.low)
    meta = ctx.resource.metadata
    if how == "api_version":
        ctx.resource.api_version = "zzz/v9"
    elif how == "id":
        meta.id = "gzm-01J00000000000000000000000"
    elif how == "org":
        meta.org = "elsewhere"
    elif how == "slug":
        meta.slug = "renamed"


def _moves_new(ctx: Any) -> None:
    """A create's step changing what was checked and stamped, as its ``move`` label asks: the id
    to the one its ``take`` label gives (another object's)."""
    meta = ctx.resource.metadata
    how = meta.labels.get("move")
    if how == "api_version":
        ctx.resource.api_version = "zzz/v9"
    elif how == "id":
        meta.id = meta.labels["take"]
    elif how == "org":
        meta.org = "elsewhere"
    elif how == "slug":
        meta.slug = "taken"


def _changes_existing(ctx: Any) -> None:
    """An update's or a delete's step changing the stored object as read, when it is labelled so."""
    if ctx.existing.metadata.labels.get("touch") != "existing":
        return
    if ctx.resource is not ctx.existing:  # an update: its change copied into what it is compared with
        ctx.existing.spec.CopyFrom(ctx.resource.spec)
    ctx.existing.metadata.labels.clear()


def _read(name: str, phase: Phase, fn: Any) -> CustomOperation:
    return CustomOperation(steps=(standard.validate, standard.authorize, FunctionStep(name, phase, fn)))


FAULTY = attrs.evolve(
    FEED_GIZMO,
    steps={
        **FEED_GIZMO.steps,
        "create": (
            *FEED_GIZMO.steps["create"],
            FunctionStep("moves_new", Phase.KIND, _moves_new),
            FunctionStep("answers_wrongly", Phase.RESPOND, _answers_wrongly),
        ),
        "update": (
            *FEED_GIZMO.steps["update"],
            FunctionStep("moves", Phase.KIND, _moves),
            FunctionStep("changes_existing", Phase.KIND, _changes_existing),
        ),
        "delete": (*FEED_GIZMO.steps.get("delete", ()), FunctionStep("changes_existing", Phase.KIND, _changes_existing)),
    },
    operations={
        **FEED_GIZMO.operations,
        "follow": _read("follow", Phase.LOAD, _stream),
        "peek": _read("peek", Phase.LOAD, _peek),
    },
)


class FaultyPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [FAULTY]


@attrs.frozen
class Served:
    app: Application
    gizmos: KindClient
    channel: grpc.Channel | None


@pytest.fixture(params=["asyncio", "sync", "in-process"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    pm = plugin_manager(entry_points=False, plugins=[FaultyPlugin()])
    app = Application(build_registry(pm), open_store(tmp_path, durable=False), pm)
    kind = app.registry.kind(FAULTY.name)
    try:
        if request.param == "in-process":
            yield Served(app, KindClient(app.channel(), kind), None)
        else:
            with serving(app, PoolSizes(read_threads=0 if request.param == "asyncio" else 2)) as (_, channel):
                yield Served(app, KindClient(channel, kind), channel)
    finally:
        app.close()


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value


def _serves_on(served: Served) -> None:
    gizmo: Any = FAULTY.resource()
    gizmo.metadata.name = "still here"
    assert served.gizmos.create(gizmo).metadata.name == "still here"
    if served.channel is not None:
        health = health_pb2_grpc.HealthStub(served.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("how", "said"),
    [("exit", "it raised SystemExit"), ("interrupt", "it raised KeyboardInterrupt"), ("bug", "ValueError"),
     ("wrong", "sent a Empty where tests.gizmo.v1.Gizmo belongs"), ("no stream", "answered a int, not messages")],
)  # fmt: skip
def test_a_stream_that_breaks_answers_internal_naming_it_and_the_server_serves_on(
    served: Served, how: str, said: str
) -> None:
    """A generator raising SystemExit ended the asyncio server's loop thread: every call of the
    daemon, health included, hung until its deadline, and SIGTERM did not stop it."""
    for _ in range(2):  # and again: the first did not take the server down
        got: list[Any] = []
        failed = _refused(lambda got=got: got.extend(served.gizmos.call("follow", GIZMO_ID(value=how), timeout=10)))
        assert failed.code() == grpc.StatusCode.INTERNAL, failed
        assert said in failed.details(), failed.details()
        if how != "no stream":
            assert [m.metadata.name for m in got] == ["sent"]
    _serves_on(served)


@pytest.mark.parametrize(
    ("how", "said"),
    [("text", f"the pipeline of {PEEK} answered a str where tests.gizmo.v1.Gizmo belongs"),
     ("message", f"the pipeline of {PEEK} answered a Empty where tests.gizmo.v1.Gizmo belongs"),
     ("nothing", f"the pipeline of {PEEK} produced no response")],
)  # fmt: skip
def test_an_answer_of_the_wrong_type_is_internal_naming_the_rpc(served: Served, how: str, said: str) -> None:
    """A str was answered UNKNOWN with Python's words over the network (a raw TypeError in
    process), and another message was sent as the object, read by the client as garbage."""
    failed = _refused(lambda: served.gizmos.call("peek", GIZMO_ID(value=how)))
    assert failed.code() == grpc.StatusCode.INTERNAL and said in failed.details(), failed.details()
    _serves_on(served)


def test_a_create_answered_wrongly_writes_nothing(served: Served) -> None:
    """The object was committed while its caller was told UNKNOWN: a retry made it twice."""
    gizmo: Any = FAULTY.resource()
    gizmo.metadata.name = "wrong answer"
    failed = _refused(lambda: served.gizmos.create(gizmo))
    assert failed.code() == grpc.StatusCode.INTERNAL and "answered a str" in failed.details()
    assert list(served.gizmos.list_all()) == []


@pytest.mark.parametrize(
    ("how", "code", "message", "violations"),
    [("from exception", grpc.StatusCode.INVALID_ARGUMENT, "spec.tag is bad", []),
     ("pairs", grpc.StatusCode.INVALID_ARGUMENT, "bad", [("spec.tag", "why")]),
     ("number", grpc.StatusCode.INVALID_ARGUMENT, "spec.tag: 5", [("spec.tag", "5")]),
     ("none", grpc.StatusCode.NOT_FOUND, "NotFound", []),
     ("metadata", grpc.StatusCode.FAILED_PRECONDITION, "x", [])],
)  # fmt: skip
def test_a_refusal_built_of_the_wrong_parts_is_still_answered_as_that_refusal(
    served: Served, how: str, code: grpc.StatusCode, message: str, violations: list[tuple[str, str]]
) -> None:
    """``raise InvalidArgument(exc)``, pairs for violations, a number for a description: each
    was answered UNKNOWN `Unexpected <class 'TypeError'>` (a raw TypeError in process)."""
    from stigmer_core.status import from_rpc_error

    failed = _refused(lambda: served.gizmos.call("peek", GIZMO_ID(value=how)))
    assert (failed.code(), failed.details()) == (code, message)
    restored = from_rpc_error(failed)
    if isinstance(restored, errors.InvalidArgument):
        assert [(v.field, v.description) for v in restored.violations] == violations
    if how == "metadata":
        assert restored.metadata == {"1": "2"}


@pytest.mark.parametrize("field", ["id", "org", "slug"])
def test_an_update_whose_step_changes_the_id_org_or_slug_writes_nothing(served: Served, field: str) -> None:
    """Written as it was, it left two objects under one slug, or slug entries naming the wrong
    object (`stigmer doctor` failed), and a slug outside its pattern that no update could pass."""
    gizmo: Any = FAULTY.resource()
    gizmo.metadata.name = "fixed"
    made: Any = served.gizmos.create(gizmo)
    made.spec.low, made.spec.high = {"id": 1, "org": 2, "slug": 3}[field], 10
    failed = _refused(lambda: served.gizmos.update(made))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert f"changed its metadata.{field}" in failed.details() and "nothing was written" in failed.details()
    stored: Any = served.gizmos.get(made.metadata.id)
    assert (stored.metadata.slug, stored.metadata.org, stored.spec.low) == ("fixed", "local", 0)
    assert reindex.check(served.app.registry, served.app.store) == []
    assert usage.check(served.app.registry, served.app.store) == []


@pytest.mark.parametrize("field", ["id", "org", "slug"])
def test_a_create_whose_step_changes_the_id_org_or_slug_writes_nothing(served: Served, field: str) -> None:
    """The slug was checked free and the id stamped before the kind's steps ran, and nothing
    checked them again: a step that set another object's id replaced it, and one that set a
    slug gave several objects that slug (`stigmer doctor` found nothing wrong)."""
    made: list[Any] = []
    for name in ("victim", "taken"):
        gizmo: Any = FAULTY.resource()
        gizmo.metadata.name = name
        made.append(served.gizmos.create(gizmo))
    mover: Any = FAULTY.resource()
    mover.metadata.name = "mover"
    mover.metadata.labels.update({"move": field, "take": made[0].metadata.id})
    failed = _refused(lambda: served.gizmos.create(mover))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert f"changed its metadata.{field}" in failed.details() and "nothing was written" in failed.details()
    stored = sorted(g.metadata.name for g in served.gizmos.list_all())
    assert stored == ["taken", "victim"]
    assert reindex.check(served.app.registry, served.app.store) == []
    assert usage.check(served.app.registry, served.app.store) == []


def test_a_write_whose_step_changes_the_api_version_writes_nothing(served: Served) -> None:
    """Stored with another api_version, an object read back as another release's, and every export
    holding it was refused whole by `stigmer import`; `doctor` found nothing wrong. (A step may set
    ``kind``: a published wire contract names it so.)"""
    mover: Any = FAULTY.resource()
    mover.metadata.name = "mover"
    mover.metadata.labels["move"] = "api_version"
    failed = _refused(lambda: served.gizmos.create(mover))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert "changed its api_version to " in failed.details() and "nothing was written" in failed.details()
    gizmo: Any = FAULTY.resource()
    gizmo.metadata.name = "fixed"
    made: Any = served.gizmos.create(gizmo)
    made.spec.low, made.spec.high = 5, 10  # 5: the update step sets another api_version
    failed = _refused(lambda: served.gizmos.update(made))
    assert failed.code() == grpc.StatusCode.INTERNAL and "changed its api_version to " in failed.details()
    stored: Any = served.gizmos.get(made.metadata.id)
    assert (stored.kind, stored.api_version, stored.spec.low) == (made.kind, made.api_version, 0)
    assert [g.metadata.name for g in served.gizmos.list_all()] == ["fixed"]


def test_an_update_or_delete_whose_step_changes_the_object_as_read_writes_nothing(served: Served) -> None:
    """An update whose step copied its change into ``ctx.existing`` was answered unchanged and
    never stored; a delete whose step changed its labels left their index entries behind."""
    gizmo: Any = FAULTY.resource()
    gizmo.metadata.name = "touched"
    gizmo.metadata.labels["touch"] = "existing"
    made: Any = served.gizmos.create(gizmo)
    made.spec.high = 7
    failed = _refused(lambda: served.gizmos.update(made))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert "changed ctx.existing" in failed.details() and "nothing was written" in failed.details()
    failed = _refused(lambda: served.gizmos.delete(made.metadata.id))
    assert failed.code() == grpc.StatusCode.INTERNAL and "changed ctx.existing" in failed.details()
    stored: Any = served.gizmos.get(made.metadata.id)
    assert (stored.spec.high, dict(stored.metadata.labels)) == (0, {"touch": "existing"})
    assert reindex.check(served.app.registry, served.app.store) == []


def test_a_write_from_an_rpc_bound_as_a_read_names_the_binding(served: Served) -> None:
    """It was INTERNAL `AttributeError`, the log holding `'_Reader' object has no attribute …`."""
    failed = _refused(lambda: served.gizmos.call("peek", GIZMO_ID(value="writes")))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert "bound as a read" in failed.details() and "writes=True" in failed.details(), failed.details()
    _serves_on(served)
