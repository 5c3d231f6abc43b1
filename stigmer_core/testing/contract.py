"""The stateful contract every kind must keep, on every path.

``KindContract`` drives random sequences of create / apply / update /
delete / get / getByReference / list against one kind and checks every
answer and status code against a plain in-memory model. It runs over the
in-process channel or over a real server on an ephemeral 127.0.0.1 port;
``contract_tests`` makes one pytest class per path, each with one test per
store engine (LMDB and PostgreSQL), so a kind that passes on one path or
engine and fails on another fails.

A kind whose objects need others to exist first (an instance needs its
parent) overrides ``prepare`` to create them; objects that appear as a side
effect (a default instance) are added to ``foreign`` and left out of list
comparisons.
"""

from __future__ import annotations

import shutil
import tempfile
import unittest
import warnings
from typing import Any, ClassVar

import grpc
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from stigmer_core.application import Application
from stigmer_core.ids import slugify
from stigmer_core.kind_client import KindClient
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


class KindContract(RuleBasedStateMachine):
    """Subclass with ``kind_name`` (and ``path``) set; ``contract_tests`` does it."""

    kind_name: ClassVar[str] = ""
    path: ClassVar[str] = IN_PROCESS
    engine: ClassVar[str] = LMDB

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.mkdtemp(prefix="stigmer-contract-")
        self._store_url: str | None = None
        if self.engine == POSTGRESQL:
            from stigmer_core.testing import postgres

            self._store_url = postgres.fresh_schema_url()
        self.app = Application.open(self._dir, durable=False, store=self._store_url)
        self.server: Server | None = None
        if self.path == NETWORK:
            self.server = Server(self.app, "127.0.0.1:0", max_workers=4)
            self.server.start()
            self.channel: grpc.Channel = grpc.insecure_channel(self.server.address)
        else:
            self.channel = self.app.channel()
        self.kind: KindRuntime = self.app.registry.kind(self.kind_name)
        self.client = KindClient(self.channel, self.kind)
        self.model: dict[str, Message] = {}
        self.foreign: set[str] = set()
        self.last_version = 0

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
    def prepare(self, resource: Message, org: str) -> None:
        """Fill references the kind requires (override); default: nothing."""

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
        self.prepare(obj, org or DEFAULT_ORG)
        return obj

    def _expect_ok(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except grpc.RpcError as exc:
            raise AssertionError(f"expected OK, got {_code(exc)}: {exc.details()}") from exc

    def _expect_code(self, code: grpc.StatusCode, call: Any, *args: Any) -> grpc.RpcError:
        try:
            got = call(*args)
        except grpc.RpcError as exc:
            assert _code(exc) == code, f"expected {code}, got {_code(exc)}: {exc.details()}"
            return exc
        raise AssertionError(f"expected {code}, got OK: {got}")

    def _check_written(self, sent: Message, got: Message, *, org: str, slug: str) -> None:
        meta, sent_meta = got.metadata, sent.metadata  # type: ignore[attr-defined]
        assert got.kind == self.kind.name  # type: ignore[attr-defined]
        assert meta.org == org and meta.slug == slug, (meta.org, meta.slug, org, slug)
        assert meta.name == sent_meta.name
        assert dict(meta.labels) == dict(sent_meta.labels)
        assert list(meta.tags) == list(sent_meta.tags)
        assert meta.id.startswith(self.kind.id_prefix + "-")
        if self.kind.shape.has_spec:
            assert got.spec == sent.spec, (got.spec, sent.spec)  # type: ignore[attr-defined]

    def _check_version(self, got: Message, *, bumped: bool) -> None:
        if not self.kind.shape.has_resource_version:
            return
        version = got.metadata.resource_version  # type: ignore[attr-defined]
        if bumped:
            assert version > self.last_version, (version, self.last_version)
            self.last_version = version

    def _check_create(self, obj: Message, org: str, slug: str, name: str) -> None:
        expected_slug = slug or slugify(name)
        if self._find(org, expected_slug) is not None:
            self._expect_code(grpc.StatusCode.ALREADY_EXISTS, self.client.create, obj)
            return
        got = self._expect_ok(self.client.create, obj)
        self._check_written(obj, got, org=org, slug=expected_slug)
        self._check_version(got, bumped=True)
        self.model[got.metadata.id] = got

    # -- rules ------------------------------------------------------------------
    @rule(
        org=st.sampled_from(s.ORGS), slug=st.one_of(st.none(), st.sampled_from(s.SLUGS)), name=s.names,
        labels=s.labels, tags=s.tags, data=st.data(),
    )  # fmt: skip
    def create(
        self, org: str, slug: str | None, name: str, labels: dict[str, str], tags: list[str], data: st.DataObject
    ) -> None:
        spec = data.draw(s.specs(self.kind))
        obj = self._build(org, slug, name, labels, tags, spec)
        self._check_create(obj, org or DEFAULT_ORG, slug or "", name)

    @rule(
        org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names, labels=s.labels,
        tags=s.tags, data=st.data(),
    )  # fmt: skip
    def apply(
        self, org: str, slug: str, name: str, labels: dict[str, str], tags: list[str], data: st.DataObject
    ) -> None:
        spec = data.draw(s.specs(self.kind))
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

    @precondition(lambda self: bool(self.model))
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
        obj = self._build(emeta.org, emeta.slug if by_slug else None, name, labels, tags, data.draw(s.specs(self.kind)))
        if not by_slug:
            obj.metadata.id = target_id  # type: ignore[attr-defined]
        if self.kind.shape.has_resource_version:
            if version == "current":
                obj.metadata.resource_version = emeta.resource_version  # type: ignore[attr-defined]
            elif version == "stale":
                obj.metadata.resource_version = max(1, emeta.resource_version - 1)  # type: ignore[attr-defined]
                if obj.metadata.resource_version != emeta.resource_version:  # type: ignore[attr-defined]
                    self._expect_code(grpc.StatusCode.ABORTED, self.client.update, obj)
                    return
        got = self._expect_ok(self.client.update, obj)
        self._check_written(obj, got, org=emeta.org, slug=emeta.slug)
        self._check_update_result(existing, got)
        self.model[target_id] = got

    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), name=s.names)
    def update_missing(self, org: str, slug: str, name: str) -> None:
        if self._find(org or DEFAULT_ORG, slug) is not None:
            return
        obj = self._build(org, slug, name, {}, [], None)
        self._expect_code(grpc.StatusCode.NOT_FOUND, self.client.update, obj)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        target_id = data.draw(st.sampled_from(sorted(self.model)))
        got = self._expect_ok(self.client.delete, target_id)
        assert got == self.model.pop(target_id), "delete returns the object as it was"
        self._expect_code(grpc.StatusCode.NOT_FOUND, self.client.get, target_id)

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

    @rule(org=st.sampled_from(s.ORGS), slug=st.sampled_from(s.SLUGS), with_kind=st.booleans())
    def get_by_reference(self, org: str, slug: str, with_kind: bool) -> None:
        kind = self.kind.name if with_kind else ""
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
        assert [o.metadata.id for o in got] == [o.metadata.id for o in expected]  # type: ignore[attr-defined]
        assert got == expected

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
        error = self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.client.create, obj)
        fields = [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
        assert field in fields, (field, fields)


    @rule(data=st.data())
    def create_invalid_spec(self, data: st.DataObject) -> None:
        """A spec breaking one declared field rule is refused naming that field, before any kind step."""
        cases = s.invalid_specs(self.kind)
        if cases is None:
            return
        field, spec = data.draw(cases)
        obj = self.kind.resource_cls()
        obj.metadata.name = "invalid spec"  # type: ignore[attr-defined]
        obj.spec.CopyFrom(spec)  # type: ignore[attr-defined]
        error = self._expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.client.create, obj)
        fields = [v.field for v in from_rpc_error(error).violations]  # type: ignore[attr-defined]
        assert field in fields, (field, fields)


CONTRACT_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def contract_tests(
    kind_name: str, base: type[KindContract] = KindContract, *, settings_: settings | None = None
) -> tuple[Any, Any]:
    """Two pytest classes running ``base``'s contract for ``kind_name``: in-process and network.

    Each has ``test_lmdb`` and ``test_postgresql``: the same machine over
    either engine (a third of the examples on PostgreSQL; ``STIGMER_TEST_ENGINES``
    picks engines). In a test module::

        TestAgentInProcess, TestAgentNetwork = contract_tests("Agent")
    """
    chosen = settings_ or CONTRACT_SETTINGS
    classes = []
    for path in (IN_PROCESS, NETWORK):
        machines = {
            engine: type(
                f"{kind_name}Contract_{path.replace('-', '_')}_{engine}",
                (base,),
                {"kind_name": kind_name, "path": path, "engine": engine},
            )
            for engine in (LMDB, POSTGRESQL)
        }
        classes.append(_case(f"{kind_name}Contract_{path.replace('-', '_')}", machines, chosen))
    return classes[0], classes[1]


def _case(name: str, machines: dict[str, type[KindContract]], chosen: settings) -> type[unittest.TestCase]:
    from stigmer_core.testing import postgres

    engines = postgres.selected_engines()
    # A third of the examples on PostgreSQL: they prove the engine keeps the same
    # contract (the kind's own logic is already explored on LMDB), at a round trip per read.
    on_postgresql = settings(chosen, max_examples=max(5, chosen.max_examples // 3))

    def test_lmdb(self: unittest.TestCase) -> None:
        if LMDB not in engines:
            self.skipTest(f"{postgres.ENGINES_ENV} leaves out lmdb")
        run_state_machine_as_test(machines[LMDB], settings=chosen)

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
            run_state_machine_as_test(machines[POSTGRESQL], settings=on_postgresql)

    return type(name, (unittest.TestCase,), {"test_lmdb": test_lmdb, "test_postgresql": test_postgresql})
