"""``SecretFields``: a third-party kind's secret string field is never answered, and writing back
what was read (the placeholder) keeps the stored value instead of storing the placeholder.

Driven through a real daemon (LMDB, then PostgreSQL; gRPC on 127.0.0.1) with the runtime-built Gizmo kind, whose
``spec.note`` plays the secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, CustomOperation, KindDeclaration, RegistryError, SecretFields, hookimpl
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.pipeline import steps as standard
from stigmer_core.plugins import plugin_manager
from tests.gizmo_kind import GIZMO, message

SECRETS = SecretFields("spec.note")
SECRET_GIZMO = attrs.evolve(
    GIZMO,
    redact=SECRETS.redact,
    redacts=SECRETS.redacts,
    steps={"create": (SECRETS.keep,), "update": (SECRETS.keep,)},
)
GIZMO_ID, CLONE = message("GizmoId"), message("CloneGizmoRequest")
NAIVE_GIZMO = attrs.evolve(GIZMO, redact=SECRETS.redact, redacts=SECRETS.redacts)
"""What docs/plugins.md offered before: ``redact`` alone."""


def _open(data_dir: Path, decl: KindDeclaration, store: str | None) -> Application:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    pm = plugin_manager(entry_points=False)
    pm.register(Plugin(), name="acme-gizmos")
    return Application.open(data_dir, pm=pm, durable=False, store=store)


@pytest.fixture(params=[SECRET_GIZMO, NAIVE_GIZMO], ids=["secret-fields", "redact-only"])
def served(
    tmp_path: Path, stigmer_store: str | None, request: pytest.FixtureRequest
) -> Iterator[tuple[Application, KindClient]]:
    with _open(tmp_path, request.param, stigmer_store) as app:
        yield app, KindClient(app.channel(), app.registry.kind("Gizmo"))


def _stored(app: Application, object_id: str) -> Any:
    kind = app.registry.kind("Gizmo")
    with app.store.read() as txn:
        raw = txn.get(kind.object_key(object_id))
    assert raw is not None
    return kind.parse(raw)


def _gizmo(note: str) -> Any:
    made = GIZMO.resource()
    made.metadata.name = "g"
    made.spec.note = note
    return made


def test_writing_back_what_was_read_keeps_the_secret(served: tuple[Application, KindClient]) -> None:
    app, gizmos = served
    made: Any = gizmos.create(_gizmo("sk-live-123"))
    assert made.spec.note == "<redacted>"
    read: Any = gizmos.get(made.metadata.id)
    assert read.spec.note == "<redacted>"
    read.metadata.labels["edited"] = "yes"
    gizmos.update(read)
    stored = _stored(app, made.metadata.id)
    if app.registry.kind("Gizmo").decl is NAIVE_GIZMO:
        assert stored.spec.note == "<redacted>", "redact alone stores the placeholder it answered"
        return
    assert stored.spec.note == "sk-live-123"
    assert stored.metadata.labels["edited"] == "yes"
    again: Any = gizmos.get(made.metadata.id)
    gizmos.apply(again)  # `stigmer get -o yaml | stigmer apply -f -`
    assert _stored(app, made.metadata.id).spec.note == "sk-live-123"
    changed: Any = gizmos.get(made.metadata.id)
    changed.spec.note = "sk-live-456"
    gizmos.update(changed)
    assert _stored(app, made.metadata.id).spec.note == "sk-live-456"


def test_the_placeholder_with_nothing_stored_is_refused(tmp_path: Path, stigmer_store: str | None) -> None:
    with _open(tmp_path, SECRET_GIZMO, stigmer_store) as app:
        gizmos = KindClient(app.channel(), app.registry.kind("Gizmo"))
        with pytest.raises(grpc.RpcError) as caught:
            gizmos.create(_gizmo("<redacted>"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("spec.note: is the placeholder '<redacted>'")
        assert list(gizmos.list_all()) == []


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("spec.secret", "secret field 'spec.secret': tests.gizmo.v1.GizmoSpec has no field 'secret'"),
        ("spec.low", "secret field 'spec.low' must be a singular string field"),
        ("status.note", "secret field 'status.note': tests.gizmo.v1.Gizmo has no message field 'status'"),
    ],
)
def test_secret_fields_that_are_not_string_fields_are_refused_at_startup(path: str, shown: str) -> None:
    wrong = SecretFields(path)
    decl = attrs.evolve(GIZMO, redact=wrong.redact, redacts=wrong.redacts)
    pm = plugin_manager(entry_points=False)

    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    pm.register(Plugin(), name="acme-gizmos")
    with pytest.raises(RegistryError) as caught:
        build_registry(pm)
    assert str(caught.value) == f"plugin 'acme-gizmos': kind 'Gizmo': {shown}"


REPORTING_GIZMO = attrs.evolve(
    SECRET_GIZMO,
    operations={
        **GIZMO.operations,
        # a pipeline of a kind author's: answers with the object, and names no redact step
        "delete": CustomOperation(
            steps=(standard.validate, standard.authorize, standard.load_by_id, standard.respond), writes=False
        ),
    },
)


def test_a_custom_rpc_answers_with_secrets_blanked_though_its_steps_name_no_redact(
    tmp_path: Path, stigmer_store: str | None
) -> None:
    """A custom rpc whose steps leave ``redact`` out (a runner's report answering with the object,
    a clone answering a page of copies) sent the secret in clear to a caller whose ``get`` never
    shows it: every custom rpc is redacted, as every one is authorized."""
    with _open(tmp_path, REPORTING_GIZMO, stigmer_store) as app:
        gizmos = KindClient(app.channel(), app.registry.kind("Gizmo"))
        made: Any = gizmos.create(_gizmo("sk-live-123"))
        answered: Any = gizmos.call("delete", GIZMO_ID(value=made.metadata.id))
        assert answered.metadata.id == made.metadata.id and answered.spec.note == "<redacted>"
        clones: Any = gizmos.call("clone", CLONE(value=made.metadata.id, copies=2))
        assert [c.spec.note for c in clones.entries] == ["<redacted>", "<redacted>"]
        assert _stored(app, clones.entries[0].metadata.id).spec.note == "sk-live-123"
