"""The stateful contract every kind must keep, on every path.

``KindContract`` drives random sequences of create / apply / update /
delete / get / getByReference / list against one kind and checks every
answer and status code against a plain in-memory model. It runs over the
in-process channel or over a real server on an ephemeral 127.0.0.1 port;
``contract_tests`` makes one pytest class per path, each with one test per
store engine (LMDB and PostgreSQL), so a kind that passes on one path or
engine and fails on another fails.

The model holds what each write returned, not what was sent: a kind's steps
may default or normalise a spec (lower-case names, sort, fill defaults), and
every later read must then return exactly what the write did. What was sent
is checked against what was written in two ways: every field sent is still
set in what was written (a step that drops a field fails), and writing back
what was returned changes nothing (a normalisation is idempotent). A kind
that wants an exact check declares its transform: ``normalise`` (a function
applied to a copy of the sent spec, as its steps would) or ``expected_spec``.

An update request that carries a field mask beside the resource
(``update_mask``, as Google's AIP-134 describes) is sent with the paths
the contract changes, drawn from the kind's declared ``mutable`` paths; the
other fields it sends differ too and must be left as stored. An update
request whose rules refuse it without ``metadata.id`` is sent by id, and
one by slug alone must be refused. Both are read from the descriptors (and
the request's rules) once per kind (``UpdateForm``).

Declared reference fields are cleared from drawn specs (random ids name no
object); a kind whose objects need others to exist first (an instance needs
its parent) overrides ``prepare`` to create them and fill the references.
Objects that appear as a side effect (a default instance) are added to
``foreign`` and left out of list comparisons.

A failure is reported with a minimal sequence of calls. ``QUICK`` (the
default) finds most faults in seconds; ``THOROUGH`` runs longer sequences;
``STIGMER_CONTRACT_PROFILE=thorough`` (any case) selects it without editing
tests; a value naming no profile is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import unittest
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs
import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, reporting, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning
from hypothesis.internal.conjecture import engine as _engine
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from stigmer_core.application import Application
from stigmer_core.ids import slugify
from stigmer_core.kind_client import KindClient, update_mask_field
from stigmer_core.kinds import reindex
from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.server import Server
from stigmer_core.status import from_rpc_error
from stigmer_core.testing import strategies as s

IN_PROCESS = "in-process"
NETWORK = "network"
LMDB = "lmdb"
POSTGRESQL = "postgresql"
DEFAULT_ORG = "local"


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


FRAMEWORK_MUTABLE = ("metadata.name", "metadata.labels", "metadata.tags")
"""What the framework's update takes from the request (and ``spec``, when the resource has one)."""


@attrs.frozen
class UpdateForm:
    """What a kind's update request needs besides the new state, read from its descriptors.

    ``mask``: the request carries ``update_mask``, so the contract names
    the paths it sets, drawn from ``mutable`` (the kind's declared mutable
    paths, else what the framework's update takes). ``by_id``: the
    request's rules refuse it without ``metadata.id``, so it names its
    target by id, never by slug.
    """

    mask: bool
    by_id: bool
    mutable: tuple[str, ...]

    @classmethod
    def of(cls, kind: KindRuntime) -> UpdateForm:
        binding = next((b for b in kind.methods.values() if b.operation == "update"), None)
        if binding is None:  # a served API without update: the contract sends none
            return cls(mask=False, by_id=False, mutable=())
        key = (binding.request_cls, kind.resource_cls, kind.resource_field, kind.decl.mutable, kind.id_prefix)
        form = _UPDATE_FORMS.get(key)
        if form is None:
            form = _UPDATE_FORMS[key] = _update_form(*key)
        return form


_UPDATE_FORMS: dict[tuple[type[Message], type[Message], str | None, tuple[str, ...], str], UpdateForm] = {}
"""Per kind, so each example's fresh application asks protovalidate nothing."""


def _update_form(
    request_cls: type[Message],
    resource_cls: type[Message],
    wrapper: str | None,
    declared: tuple[str, ...],
    id_prefix: str,
) -> UpdateForm:
    resource = resource_cls.DESCRIPTOR
    mutable = declared or FRAMEWORK_MUTABLE + (("spec",) if "spec" in resource.fields_by_name else ())
    mask = update_mask_field(request_cls)

    def probe(with_id: bool) -> set[str]:
        """The rules an update of a well-formed resource breaks, with and without an id (protovalidate decides)."""
        request = request_cls()
        target: Any = request if wrapper is None or request_cls is resource_cls else getattr(request, wrapper)
        target.metadata.name, target.metadata.slug, target.metadata.org = "Probe", "probe", DEFAULT_ORG
        if with_id:
            target.metadata.id = f"{id_prefix}-01arz3ndektsv4rrffq69g5fav"
        if mask is not None:
            getattr(request, mask).paths.extend(mutable[:1])
        return {f"{path}:{rule}" for path, rule in s.violations(request)}

    return UpdateForm(mask=mask is not None, by_id=bool(probe(False) - probe(True)), mutable=mutable)


def _fixed_envelope(resource_cls: type[Message]) -> tuple[tuple[str, str], ...]:
    """``api_version`` and ``kind`` values the resource's rules fix (a served API's ``const``),
    which every resource sent must carry; a kind of our own fixes none and the server fills them."""
    found = _ENVELOPES.get(resource_cls)
    if found is None:
        fields: Any = resource_cls.DESCRIPTOR.fields_by_name
        fixed = ((name, s.constant(fields[name])) for name in ("api_version", "kind") if name in fields)
        found = _ENVELOPES[resource_cls] = tuple((name, value) for name, value in fixed if value is not None)
    return found


_ENVELOPES: dict[type[Message], tuple[tuple[str, str], ...]] = {}


class KindContract(RuleBasedStateMachine):
    """Subclass with ``kind_name`` (and ``path``) set; ``contract_tests`` does it."""

    kind_name: ClassVar[str] = ""
    path: ClassVar[str] = IN_PROCESS
    engine: ClassVar[str] = LMDB
    normalise: ClassVar[Callable[[Message], None] | None] = None
    """What the kind's steps do to a spec, applied in place to a copy of the
    sent one; None: no exact expectation (see the module docstring)."""
    spec_strategy: ClassVar[Callable[[KindRuntime], Any] | None] = None
    """The valid specs to draw, for a kind whose steps accept less than its
    field rules say (a skill's ``spec.artifact`` must be a zip); None: every
    spec the rules allow (``strategies.specs``)."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.mkdtemp(prefix="stigmer-contract-")
        self._store_url: str | None = None
        if self.engine == POSTGRESQL:
            from stigmer_core.testing import postgres

            self._store_url = postgres.fresh_schema_url()
        self.app = self.open_application(Path(self._dir))
        self.server: Server | None = None
        if self.path == NETWORK:
            self.server = Server(self.app, "127.0.0.1:0", max_workers=4)
            self.server.start()
            self.channel: grpc.Channel = grpc.insecure_channel(self.server.address)
        else:
            self.channel = self.app.channel()
        self.kind: KindRuntime = self.app.registry.kind(self.kind_name)
        self.client = KindClient(self.channel, self.kind)
        self.form = UpdateForm.of(self.kind)
        self.envelope = _fixed_envelope(self.kind.resource_cls)
        self.served = frozenset(b.operation for b in self.kind.methods.values())
        """Operations the kind's services bind (a served API may lack one, e.g. getByReference)."""
        self.model: dict[str, Message] = {}
        self.foreign: set[str] = set()
        self.last_version = 0
        self.wire_kind = ""

    def _specs(self) -> Any:
        strategy = type(self).spec_strategy
        return strategy(self.kind) if strategy is not None else s.specs(self.kind)

    def teardown(self) -> None:
        self.channel.close()
        if self.server is not None:
            self.server.stop(grace=0)
        self.app.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._store_url is not None:
            from stigmer_core.testing import postgres

            postgres.drop_schema(self._store_url)

    # -- hooks for kinds -------------------------------------------------------
    def open_application(self, data_dir: Path) -> Application:
        """The application under test, over a fresh store: LMDB in ``data_dir``, or the
        PostgreSQL schema this machine was given (override for other plugins)."""
        return Application.open(data_dir, durable=False, store=self._store_url)

    def prepare(self, resource: Message, org: str) -> None:
        """Fill references the kind requires (override); default: nothing."""

    def expected_spec(self, sent: Message) -> Message | None:
        """The spec a write of ``sent`` must return, or None to check only that nothing sent was dropped."""
        normalise = type(self).normalise
        if normalise is None:
            return None
        expected = type(sent)()
        expected.CopyFrom(sent)
        normalise(expected)
        return expected

    def client_for(self, kind_name: str) -> KindClient:
        return KindClient(self.channel, self.app.registry.kind(kind_name))

    # -- helpers --------------------------------------------------------------
    def _find(self, org: str, slug: str) -> Message | None:
        for obj in self.model.values():
            meta = obj.metadata  # type: ignore[attr-defined]
            if meta.org == org and meta.slug == slug:
                return obj
        return None

    def _build(
        self, org: str, slug: str | None, name: str, labels: dict[str, str], tags: list[str], spec: Message | None
    ) -> Message:
        obj = self.kind.resource_cls()
        for field, value in self.envelope:
            setattr(obj, field, value)
        meta = obj.metadata  # type: ignore[attr-defined]
        meta.name = name
        if slug:
            meta.slug = slug
        if org:
            meta.org = org
        meta.labels.update(labels)
        meta.tags.extend(tags)
        if spec is not None:
            obj.spec.CopyFrom(spec)  # type: ignore[attr-defined]
        for ref in self.kind.references:
            _clear_path(obj, ref.field.path)
        self.prepare(obj, org or DEFAULT_ORG)
        return obj

    def _expect_ok(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except grpc.RpcError as exc:
            raise AssertionError(f"expected OK, got {_code(exc)}: {exc.details()}{self._prepare_hint(exc)}") from exc

    def _prepare_hint(self, exc: grpc.RpcError) -> str:
        """What to do when a declared reference was refused and ``prepare`` is the default: the
        contract clears references (drawn ids name nothing), so a kind requiring one fails here
        on its first create, and the failure alone does not say where the fix belongs."""
        if type(self).prepare is not KindContract.prepare:
            return ""
        error = from_rpc_error(exc)
        named = {v.field for v in getattr(error, "violations", ())} | {str(exc.details() or "")}
        fields = [
            ref.field.path
            for ref in self.kind.references
            if any(ref.field.path in said or said.startswith(ref.field.path) for said in named)
        ]
        if not fields:
            return ""
        return (
            f" (the contract clears reference fields, {', '.join(fields)}, since drawn ids name no object: "
            f"override prepare(resource, org) in {type(self).__name__} to create the objects they name "
            "and fill them in)"
        )

    def _expect_code(self, code: grpc.StatusCode, call: Any, *args: Any) -> grpc.RpcError:
        try:
            got = call(*args)
        except grpc.RpcError as exc:
            assert _code(exc) == code, f"expected {code}, got {_code(exc)}: {exc.details()}"
            return exc
        raise AssertionError(f"expected {code}, got OK: {got}")

    def _check_written(self, sent: Message, got: Message, *, org: str, slug: str) -> None:
        meta, sent_meta = got.metadata, sent.metadata  # type: ignore[attr-defined]
        # The kind's name, or one name of its own every object carries (a served API's ``kind: "Agent"``).
        self.wire_kind = self.wire_kind or got.kind  # type: ignore[attr-defined]
        assert got.kind == self.wire_kind and got.kind, (got.kind, self.wire_kind)  # type: ignore[attr-defined]
        assert meta.org == org and meta.slug == slug, (meta.org, meta.slug, org, slug)
        assert meta.name == sent_meta.name
        assert dict(meta.labels) == dict(sent_meta.labels)
        assert list(meta.tags) == list(sent_meta.tags)
        assert meta.id.startswith(self.kind.id_prefix + "-")
        if self.kind.shape.has_spec:
            self.check_spec(sent.spec, got.spec)  # type: ignore[attr-defined]

    def check_spec(self, sent: Message, got: Message) -> None:
        """What a write returned as spec, against what was sent."""
        expected = self.expected_spec(sent)
        if expected is not None:
            assert got == expected, f"written spec {got} differs from the expected {expected}"
            return
        dropped = _dropped(sent, got, "spec")
        assert not dropped, f"the write dropped {', '.join(dropped)} (sent {sent}, written {got})"

    def _check_version(self, got: Message, *, bumped: bool) -> None:
        if not self.kind.shape.has_resource_version:
            return
        version = got.metadata.resource_version  # type: ignore[attr-defined]
        if bumped:
            assert version > self.last_version, (version, self.last_version)
            self.last_version = version

    def _check_create(self, obj: Message, org: str, slug: str, name: str) -> None:
        expected_slug = slug or slugify(name)
        if not slug and self._refuses_slug(obj, expected_slug):
            # The slug derived from the name breaks the kind's own slug rules (a one-letter
            # name under a schema that wants two): refused naming the slug, nothing stored.
            error = self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.client.create, obj)
            fields = [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
            assert "metadata.slug" in fields, f"a derived slug {expected_slug!r} is refused naming {fields}"
            return
        if self._find(org, expected_slug) is not None:
            self._expect_code(grpc.StatusCode.ALREADY_EXISTS, self.client.create, obj)
            return
        got = self._expect_ok(self.client.create, obj)
        self._check_written(obj, got, org=org, slug=expected_slug)
        self._check_version(got, bumped=True)
        self.model[got.metadata.id] = got
        # The same create again is a duplicate: checked at once, not left to a later draw.
        self._expect_code(grpc.StatusCode.ALREADY_EXISTS, self.client.create, obj)

    def _refuses_slug(self, obj: Message, slug: str) -> bool:
        probe = self.kind.resource_cls()
        probe.CopyFrom(obj)
        probe.metadata.slug = slug  # type: ignore[attr-defined]
        return "metadata.slug" in [path for path, _ in s.violations(probe)]

    # -- rules ------------------------------------------------------------------
    @rule(
        org=st.sampled_from(s.ORGS), slug=st.one_of(st.none(), st.sampled_from(s.SLUGS)), name=s.names,
        labels=s.labels, tags=s.tags, data=st.data(),
    )  # fmt: skip
    def create(
        self, org: str, slug: str | None, name: str, labels: dict[str, str], tags: list[str], data: st.DataObject
    ) -> None:
        spec = data.draw(self._specs())
        obj = self._build(org, slug, name, labels, tags, spec)
        self._check_create(obj, org or DEFAULT_ORG, slug or "", name)

    @precondition(lambda self: "apply" in self.served)
    @rule(
        org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names, labels=s.labels,
        tags=s.tags, data=st.data(),
    )  # fmt: skip
    def apply(
        self, org: str, slug: str, name: str, labels: dict[str, str], tags: list[str], data: st.DataObject
    ) -> None:
        spec = data.draw(self._specs())
        obj = self._build(org, slug, name, labels, tags, spec)
        effective_org = org or DEFAULT_ORG
        existing = self._find(effective_org, slug)
        got = self._expect_ok(self.client.apply, obj)
        self._check_written(obj, got, org=effective_org, slug=slug)
        if existing is None:
            self._check_version(got, bumped=True)
        else:
            assert got.metadata.id == existing.metadata.id  # type: ignore[attr-defined]
            self._check_update_result(existing, got)
        self.model[got.metadata.id] = got

    def _check_update_result(self, existing: Message, got: Message) -> None:
        emeta, gmeta = existing.metadata, got.metadata  # type: ignore[attr-defined]
        same = (
            emeta.name == gmeta.name
            and dict(emeta.labels) == dict(gmeta.labels)
            and list(emeta.tags) == list(gmeta.tags)
            and (not self.kind.shape.has_spec or existing.spec == got.spec)  # type: ignore[attr-defined]
        )
        if same:
            assert got == existing, "an update that changes nothing must leave the object as it was"
        else:
            self._check_version(got, bumped=True)
        if self.kind.shape.has_timestamps:
            assert gmeta.created_at == emeta.created_at, "creation time is immutable"

    @precondition(lambda self: bool(self.model) and "update" in self.served)
    @rule(
        name=s.names,
        labels=s.labels,
        tags=s.tags,
        version=st.sampled_from(["none", "current", "stale"]),
        by_slug=st.booleans(),
        data=st.data(),
    )
    def update(
        self, name: str, labels: dict[str, str], tags: list[str], version: str, by_slug: bool, data: st.DataObject
    ) -> None:
        target_id = data.draw(st.sampled_from(sorted(self.model)))
        existing = self.model[target_id]
        emeta = existing.metadata  # type: ignore[attr-defined]
        obj = self._build(emeta.org, emeta.slug if by_slug else None, name, labels, tags, data.draw(self._specs()))
        paths = self._draw_mask(data)
        if not by_slug:
            obj.metadata.id = target_id  # type: ignore[attr-defined]
        elif self.form.by_id:  # the request's rules want the id: naming the target by slug alone is refused
            self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self._update, obj, paths)
            return
        if self.kind.shape.has_resource_version:
            if version == "current":
                obj.metadata.resource_version = emeta.resource_version  # type: ignore[attr-defined]
            elif version == "stale":  # any version but the current one (one above, for the very first write)
                current = emeta.resource_version
                obj.metadata.resource_version = current - 1 if current > 1 else current + 1  # type: ignore[attr-defined]
                self._expect_code(grpc.StatusCode.ABORTED, self._update, obj, paths)
                return
        got = self._expect_ok(self._update, obj, paths)
        self._check_written(self._masked(existing, obj, paths), got, org=emeta.org, slug=emeta.slug)
        self._check_update_result(existing, got)
        self.model[target_id] = got

    def _draw_mask(self, data: st.DataObject) -> tuple[str, ...]:
        """The paths an update sets: some of the mutable ones, when the request takes a mask (else none)."""
        if not self.form.mask:
            return ()
        chosen = data.draw(st.lists(st.sampled_from(self.form.mutable), min_size=1, unique=True), label="update_mask")
        return tuple(chosen)

    def _update(self, obj: Message, paths: tuple[str, ...]) -> Message:
        return self.client.update(obj, list(paths) if self.form.mask else None)

    def _masked(self, existing: Message, sent: Message, paths: tuple[str, ...]) -> Message:
        """What an update of ``existing`` to ``sent`` must write: all of ``sent``, or with a mask
        only the masked paths of it (AIP-134: a masked field unset in ``sent`` is cleared)."""
        if not self.form.mask:
            return sent
        expected = self.kind.resource_cls()
        expected.CopyFrom(existing)
        FieldMask(paths=paths).MergeMessage(sent, expected, replace_message_field=True, replace_repeated_field=True)
        return expected

    @precondition(lambda self: bool(self.model) and "update" in self.served)
    @rule(data=st.data())
    def rewrite_unchanged(self, data: st.DataObject) -> None:
        """Writing back what a read returned changes nothing: no new version, the same object."""
        target_id = data.draw(st.sampled_from(sorted(self.model)))
        existing = self.model[target_id]
        obj = self.kind.resource_cls()
        obj.CopyFrom(existing)
        if self.kind.shape.has_status:
            obj.ClearField("status")
        got = self._expect_ok(self._update, obj, self.form.mutable)
        assert got == existing, f"rewriting an object as read changed it: {existing} became {got}"

    @precondition(lambda self: "update" in self.served)
    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names, data=st.data())
    def update_missing(self, org: str, slug: str, name: str, data: st.DataObject) -> None:
        if self._find(org or DEFAULT_ORG, slug) is not None:
            return
        obj = self._build(org, slug, name, {}, [], data.draw(self._specs()))
        if self.form.by_id:  # an id never issued
            obj.metadata.id = f"{self.kind.id_prefix}-01arz3ndektsv4rrffq69g5fav"  # type: ignore[attr-defined]
        self._expect_code(grpc.StatusCode.NOT_FOUND, self._update, obj, self.form.mutable)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        target_id = data.draw(st.sampled_from(sorted(self.model)))
        got = self._expect_ok(self.client.delete, target_id)
        assert got == self.model.pop(target_id), "delete returns the object as it was"
        self._expect_code(grpc.StatusCode.NOT_FOUND, self.client.get, target_id)

    @rule()
    def indexes_agree(self) -> None:
        """Every index of every kind (slugs, labels, declared, owners, references) matches the stored objects."""
        problems = reindex.check(self.app.registry, self.app.store)
        assert not problems, f"indexes disagree with the stored objects: {problems}"

    @rule()
    def delete_missing(self) -> None:
        self._expect_code(
            grpc.StatusCode.NOT_FOUND, self.client.delete, f"{self.kind.id_prefix}-01arz3ndektsv4rrffq69g5fav"
        )

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        target_id = data.draw(st.sampled_from(sorted(self.model)))
        assert self._expect_ok(self.client.get, target_id) == self.model[target_id]

    @precondition(lambda self: "getByReference" in self.served)
    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), with_kind=st.booleans())
    def get_by_reference(self, org: str, slug: str, with_kind: bool) -> None:
        kind: Any = ""
        if with_kind:  # by name, or by the enum value that names the kind when references use a closed enum
            named = self.kind.reference_kinds
            kind = self.kind.name if named is None else min(named, default=0)
        expected = self._find(org or DEFAULT_ORG, slug)
        if expected is None:
            self._expect_code(
                grpc.StatusCode.NOT_FOUND, lambda: self.client.get_by_reference(org=org, slug=slug, kind=kind)
            )
            return
        got = self._expect_ok(lambda: self.client.get_by_reference(org=org, slug=slug, kind=kind))
        assert got == expected
        by_id = self._expect_ok(lambda: self.client.get_by_reference(id=expected.metadata.id))  # type: ignore[attr-defined]
        assert by_id == expected

    @rule(
        org=st.sampled_from(["", "local", "acme"]),
        label=st.one_of(st.none(), st.tuples(st.sampled_from(s.LABEL_KEYS), st.sampled_from(s.LABEL_VALUES))),
        page_size=st.integers(1, 4),
    )
    def list(self, org: str, label: tuple[str, str] | None, page_size: int) -> None:
        labels = dict([label]) if label else {}
        if not self._listable(org):
            return  # the kind's list request refuses it (a served API that always wants an org)
        expected = [
            o for o in self.model.values()
            if (not org or o.metadata.org == org)  # type: ignore[attr-defined]
            and all(o.metadata.labels.get(k) == v for k, v in labels.items())  # type: ignore[attr-defined]
        ]  # fmt: skip
        if org and not labels:
            expected.sort(key=lambda o: o.metadata.slug)  # type: ignore[attr-defined]
        else:
            expected.sort(key=lambda o: o.metadata.id)  # type: ignore[attr-defined]
        pages = 0
        got: list[Message] = []
        token = ""
        while True:
            page = self._expect_ok(
                lambda t=token: self.client.list_page(org=org, labels=labels, page_size=page_size, page_token=t)
            )
            assert len(page.entries) <= page_size
            got.extend(page.entries)
            token = page.next_page_token
            pages += 1
            assert pages <= len(self.model) + len(self.foreign) + 2, "pagination does not end"
            if not token:
                break
        got = [o for o in got if o.metadata.id not in self.foreign]  # type: ignore[attr-defined]
        got_ids = [o.metadata.id for o in got]  # type: ignore[attr-defined]
        expected_ids = [o.metadata.id for o in expected]  # type: ignore[attr-defined]
        where = f"list(org={org!r}, labels={labels}, page_size={page_size})"
        assert got_ids == expected_ids, f"{where} returned ids {got_ids}, expected {expected_ids}"
        assert got == expected, f"{where} returned objects that differ from what their writes returned"

    def _listable(self, org: str) -> bool:
        """Whether the kind's list request rules accept this org (checked like any request)."""
        binding = next(b for b in self.kind.methods.values() if b.operation == "list")
        fields = binding.request_cls.DESCRIPTOR.fields_by_name
        request = binding.request_cls(**({"org": org} if "org" in fields else {}))
        return "org" not in [path for path, _ in s.violations(request)]

    @rule(case=s.invalid_metadata())
    def create_invalid(self, case: tuple[str, dict[str, Any]]) -> None:
        field, metadata = case
        obj = self.kind.resource_cls()
        for key, value in metadata.items():
            target = obj.metadata  # type: ignore[attr-defined]
            if isinstance(value, dict):
                getattr(target, key).update(value)
            else:
                setattr(target, key, value)
        if field not in [path for path, _ in s.violations(obj)]:
            return  # the kind's metadata declares no such rule (a served API's schema may differ)
        error = self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.client.create, obj)
        fields = [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
        assert field in fields, (field, fields)

    @rule(data=st.data())
    def create_invalid_spec(self, data: st.DataObject) -> None:
        """A spec breaking one declared rule is refused naming the field, before any kind step."""
        cases = s.invalid_specs(self.kind)
        if cases is None:
            return
        broken = data.draw(cases)
        obj = self.kind.resource_cls()
        obj.metadata.name = "invalid spec"  # type: ignore[attr-defined]
        obj.spec.CopyFrom(broken.message)  # type: ignore[attr-defined]
        error = self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.client.create, obj)
        fields = [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
        assert broken.field in fields, f"breaking {broken.rule} of {broken.field}: violations name {fields}"


def _clear_path(message: Message, path: str) -> None:
    *parents, leaf = path.split(".")
    target: Any = message
    for part in parents:
        if not target.HasField(part):
            return
        target = getattr(target, part)
    target.ClearField(leaf)


def _dropped(sent: Message, got: Message, prefix: str) -> list[str]:
    """Paths of fields set in ``sent`` that are unset or empty in ``got``."""
    present = {field.name for field, _ in got.ListFields()}
    found = []
    for field, value in sent.ListFields():
        path = f"{prefix}.{field.name}"
        if field.name not in present:
            found.append(path)
        elif field.message_type is not None and isinstance(value, Message):
            found += _dropped(value, getattr(got, field.name), path)
    return found


_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)  # no "explain": slow on machines

QUICK = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    phases=_PHASES,
    report_multiple_bugs=False,
    suppress_health_check=_QUIET,
)
"""Short sequences: a fault most kinds can have shows within seconds, shrunk to a few calls."""

THOROUGH = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    phases=_PHASES,
    report_multiple_bugs=False,
    suppress_health_check=_QUIET,
)
"""Longer and more sequences, for CI or before a release."""

PROFILES = {"quick": QUICK, "thorough": THOROUGH}
SHRINK_SECONDS = {"quick": 10.0, "thorough": 60.0}
"""How long a failure may be shrunk before it is reported (hypothesis' own limit is 5 minutes)."""
PROFILE_VARIABLE = "STIGMER_CONTRACT_PROFILE"


def profile(name: str | None) -> tuple[settings, float]:
    """(settings, shrink seconds) of the profile ``name`` names, in any case (``THOROUGH``, as the
    docs write the profiles, is ``thorough``); unset or empty is ``quick``. A name of no profile is
    refused rather than run as ``quick``: a CI job asking for a thorough run would pass on a quick one."""
    chosen = (name or "quick").strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"{PROFILE_VARIABLE}={name!r} names no contract profile: use one of {', '.join(PROFILES)} (any case)"
        )
    return PROFILES[chosen], SHRINK_SECONDS[chosen]


CONTRACT_SETTINGS, CONTRACT_SHRINK_SECONDS = profile(os.environ.get(PROFILE_VARIABLE))


@contextlib.contextmanager
def bounded_shrinking(seconds: float) -> Iterator[None]:
    """Stop shrinking a failure after ``seconds`` and report the smallest example found so far.

    Hypothesis reads this limit from a module constant it does not document
    (``MAX_SHRINKING_SECONDS``); when it is gone, nothing is changed. Its
    notice on stopping speaks of five minutes, so it is replaced with one
    that gives the real limit.
    """
    if not hasattr(_engine, "MAX_SHRINKING_SECONDS"):
        yield
        return
    saved = _engine.MAX_SHRINKING_SECONDS
    outer = reporting.current_reporter()

    def reporter(value: object) -> None:
        if isinstance(value, str) and value.startswith("WARNING: Hypothesis has spent more than five minutes"):
            value = (
                f"Shrinking stopped after {seconds:g} s (the contract's limit): the example below is the "
                "smallest found in that time; a thorough profile shrinks longer."
            )
        outer(value)

    _engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        with reporting.with_reporter(reporter):
            yield
    finally:
        _engine.MAX_SHRINKING_SECONDS = saved


def run_contract(
    machine: type[KindContract], *, settings: settings | None = None, shrink_seconds: float | None = None
) -> None:
    """Run one contract machine as a test (what the classes ``contract_tests`` makes do)."""
    with bounded_shrinking(CONTRACT_SHRINK_SECONDS if shrink_seconds is None else shrink_seconds):
        run_state_machine_as_test(machine, settings=settings or CONTRACT_SETTINGS)


def contract_tests(
    kind_name: str,
    base: type[KindContract] = KindContract,
    *,
    settings: settings | None = None,
    normalise: Callable[[Message], None] | None = None,
    shrink_seconds: float | None = None,
    specs: Callable[[KindRuntime], Any] | None = None,
) -> tuple[Any, Any]:
    """Two pytest classes running ``base``'s contract for ``kind_name``: in-process and network.

    Each has ``test_lmdb`` and ``test_postgresql``: the same machine over
    either engine (a third of the examples on PostgreSQL; ``STIGMER_TEST_ENGINES``
    picks engines).

    ``settings`` (hypothesis settings) default to ``CONTRACT_SETTINGS``: the
    ``STIGMER_CONTRACT_PROFILE`` profile, ``quick`` unless set; a failure is
    shrunk for at most ``shrink_seconds`` (10 s quick, 60 s thorough), then
    reported. ``normalise`` is what the kind's steps do to a spec (see
    ``KindContract.normalise``); ``specs`` draws the specs to write, where the
    kind's steps accept less than its rules (see ``KindContract.spec_strategy``).
    In a test module::

        TestAgentInProcess, TestAgentNetwork = contract_tests("Agent")
    """
    classes = []
    chosen = settings or CONTRACT_SETTINGS
    for path in (IN_PROCESS, NETWORK):
        attributes: dict[str, Any] = {"kind_name": kind_name, "path": path}
        if normalise is not None:
            attributes["normalise"] = staticmethod(normalise)
        if specs is not None:
            attributes["spec_strategy"] = staticmethod(specs)
        machines = {
            engine: type(
                f"{kind_name}Contract_{path.replace('-', '_')}_{engine}", (base,), {**attributes, "engine": engine}
            )
            for engine in (LMDB, POSTGRESQL)
        }
        classes.append(_case(f"{kind_name}Contract_{path.replace('-', '_')}", machines, chosen, shrink_seconds))
    return classes[0], classes[1]


def _case(
    name: str, machines: dict[str, type[KindContract]], chosen: settings, shrink_seconds: float | None
) -> type[unittest.TestCase]:
    from stigmer_core.testing import postgres

    engines = postgres.selected_engines()
    # A third of the examples on PostgreSQL: they prove the engine keeps the same
    # contract (the kind's own logic is already explored on LMDB), at a round trip per read.
    on_postgresql = settings(chosen, max_examples=max(5, chosen.max_examples // 3))

    def test_lmdb(self: unittest.TestCase) -> None:
        if LMDB not in engines:
            self.skipTest(f"{postgres.ENGINES_ENV} leaves out lmdb")
        run_contract(machines[LMDB], settings=chosen, shrink_seconds=shrink_seconds)

    def test_postgresql(self: unittest.TestCase) -> None:
        if POSTGRESQL not in engines:
            self.skipTest(f"{postgres.ENGINES_ENV} leaves out postgresql")
        try:
            postgres.shared_url()
        except postgres.PostgresUnavailable as exc:
            if postgres.required():
                raise AssertionError(f"CI needs PostgreSQL for the contract on it: {exc}") from exc
            self.skipTest(f"no PostgreSQL for the contract on it: {exc}")
        with warnings.catch_warnings():
            # The connection pool's own threads jitter their timers with the global
            # ``random``, which hypothesis would otherwise blame on the strategies.
            warnings.filterwarnings("ignore", "Do not use the `random` module", HypothesisDeprecationWarning)
            run_contract(machines[POSTGRESQL], settings=on_postgresql, shrink_seconds=shrink_seconds)

    return type(name, (unittest.TestCase,), {"test_lmdb": test_lmdb, "test_postgresql": test_postgresql})
