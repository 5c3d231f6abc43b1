"""Startup rejections: each names the plugin(s) involved."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from stigmer_core import KindDeclaration, Phase, RegistryError, hookimpl, step
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_plugins import agent as agent_plugin


def _plugin(name: str, *decls: KindDeclaration) -> Any:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return list(decls)

    plugin = Plugin()
    plugin.__class__.__name__ = name
    return plugin


def _build(*plugins: tuple[str, Any]) -> None:
    pm = plugin_manager(entry_points=False)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    build_registry(pm)


AGENT = agent_plugin.AGENT


def test_first_party_plugins_come_from_the_entry_point_group() -> None:
    pm = plugin_manager()
    assert pm.get_plugin("agent") is agent_plugin
    names = [k.name for k in build_registry(pm).kinds]
    assert names[:2] == ["Agent", "AgentInstance"]


def test_duplicate_kind_name_names_both_plugins() -> None:
    twin = attrs.evolve(AGENT, id_prefix="twn", key_prefix="twins")
    with pytest.raises(RegistryError, match=r"kind 'Agent' is declared twice: by plugin 'first' and plugin 'second'"):
        _build(("first", _plugin("A", AGENT)), ("second", _plugin("B", twin)))


def test_overlapping_key_prefixes_are_rejected() -> None:
    other = attrs.evolve(AGENT, name="Agent2", id_prefix="ag2", key_prefix="agentsx")
    with pytest.raises(
        RegistryError, match=r"key prefixes overlap: 'agents' .*'agentsx'.* plugin 'first' and plugin 'second'"
    ):
        _build(("first", _plugin("A", AGENT)), ("second", _plugin("B", other)))


def test_identical_key_prefixes_are_rejected() -> None:
    other = attrs.evolve(AGENT, name="Agent2", id_prefix="ag2")
    with pytest.raises(RegistryError, match=r"key prefixes overlap"):
        _build(("first", _plugin("A", AGENT)), ("second", _plugin("B", other)))


def test_duplicate_id_prefix_is_rejected() -> None:
    other = attrs.evolve(AGENT, name="Agent2", key_prefix="robots")
    with pytest.raises(RegistryError, match=r"id prefix 'agt' .* plugin 'first' and plugin 'second'"):
        _build(("first", _plugin("A", AGENT)), ("second", _plugin("B", other)))


def _service_with_extra_method() -> Any:
    """A Command service with an rpc no standard operation binds."""
    pool = descriptor_pool.Default()
    name = "tests/registry/extra.proto"
    try:
        return pool.FindFileByName(name).services_by_name["ExtraCommandController"]
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto(
        name=name, package="tests.registry", syntax="proto3",
        dependency=["stigmer_core/api/agentic/agent/v1/agent.proto"],
    )  # fmt: skip
    service = file.service.add(name="ExtraCommandController")
    for method in ("create", "frobnicate"):
        service.method.add(
            name=method, input_type=".stigmer.agentic.agent.v1.Agent", output_type=".stigmer.agentic.agent.v1.Agent"
        )
    pool.Add(file)
    return pool.FindFileByName(name).services_by_name["ExtraCommandController"]


def test_unbound_rpc_method_is_a_startup_error() -> None:
    extra = attrs.evolve(AGENT, command_service=_service_with_extra_method())
    with pytest.raises(
        RegistryError,
        match=r"plugin 'extra': kind 'Agent': rpc tests.registry.ExtraCommandController.frobnicate is bound by no operation",
    ):
        _build(("extra", _plugin("A", extra)))


def test_custom_operation_binds_the_extra_method() -> None:
    from stigmer_core import CustomOperation
    from stigmer_core.pipeline import steps as standard

    extra = attrs.evolve(
        AGENT,
        command_service=_service_with_extra_method(),
        operations={"frobnicate": CustomOperation(steps=(standard.validate, standard.respond))},
    )
    pm = plugin_manager(entry_points=False, plugins=[])
    pm.register(_plugin("A", extra), name="extra")
    registry = build_registry(pm)
    paths = set(registry.kind("Agent").methods)
    assert "/tests.registry.ExtraCommandController/frobnicate" in paths


def test_unknown_hook_name_names_the_plugin() -> None:
    typo = SimpleNamespace()

    @hookimpl
    def stigmer_kind() -> list[KindDeclaration]:  # missing the trailing "s"
        return []

    typo.stigmer_kind = stigmer_kind
    with pytest.raises(RegistryError, match=r"plugin 'typo'.*stigmer_kind.*did you mean 'stigmer_kinds'\?"):
        pm = plugin_manager(entry_points=False)
        pm.register(typo, name="typo")
        from stigmer_core.plugins import check

        check(pm)


def test_steps_for_unknown_operation_are_rejected() -> None:
    @step(Phase.KIND)
    def noop(ctx: Any) -> None:
        return None

    bad = attrs.evolve(AGENT, steps={"craete": (noop,)})
    with pytest.raises(RegistryError, match=r"plugin 'p': kind 'Agent': steps declared for unknown operation 'craete' \(did you mean 'create'\?"):
        _build(("p", _plugin("A", bad)))


def test_a_non_step_is_rejected() -> None:
    bad = attrs.evolve(AGENT, steps={"create": (lambda ctx: None,)})
    with pytest.raises(RegistryError, match=r"is not a step"):
        _build(("p", _plugin("A", bad)))


def test_cross_cutting_steps_reach_every_kind_by_phase() -> None:
    seen: list[str] = []

    @step(Phase.AUTHORIZE, name="audit")
    def audit(ctx: Any) -> None:
        seen.append(ctx.kind.name)

    class Audit:
        @hookimpl
        def stigmer_pipeline_steps(self, kind: KindDeclaration, operation: str) -> list[Any]:
            return [audit]

    pm = plugin_manager(plugins=[Audit()])
    registry = build_registry(pm)
    for kind in registry.kinds:
        for op, pipeline in kind.pipelines.items():
            names = [s.name for s in pipeline.pre]
            assert names.index("audit") == names.index("authorize") + 1, (kind.name, op, names)


def test_index_keys_follow_the_key_layout() -> None:
    """Write-path keys are built from prefixes encoded at startup; they must be
    exactly the ``store.keys`` layout that queries scan (any value count, any scope)."""
    from stigmer_core.kinds.declaration import IndexSpec
    from stigmer_core.kinds.runtime import LABEL_INDEX
    from stigmer_core.store import keys

    values: list[tuple[str, ...]] = [("one",), ("a", "b"), ()]
    decl = attrs.evolve(
        AGENT,
        indexes=(
            IndexSpec("scoped", lambda obj: values),
            IndexSpec("global", lambda obj: values, org_scoped=False),
        ),
    )
    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("Only", decl), name="only")
    kind = build_registry(pm).kind("Agent")
    agent = AGENT.resource()
    agent.metadata.id = "agt-01h00000000000000000000000"
    agent.metadata.org = "acme"
    agent.metadata.slug = "bot"
    agent.metadata.labels["team"] = "t1"
    agent.metadata.labels["tier"] = "gold"
    meta = agent.metadata
    expected = []
    for key, value in meta.labels.items():
        expected.append(keys.index_key("agents", LABEL_INDEX, (meta.org, key, value), meta.id))
        expected.append(keys.index_key("agents", LABEL_INDEX, ("", key, value), meta.id))
    for value in values:
        expected.append(keys.index_key("agents", "scoped", (meta.org, *value), meta.id))
        expected.append(keys.index_key("agents", "scoped", ("", *value), meta.id))
    for value in values:
        expected.append(keys.index_key("agents", "global", value, meta.id))
    assert kind.index_keys(agent) == expected
    assert kind.object_key(meta.id) == keys.object_key("agents", meta.id)
    assert kind.slug_key(meta.org, meta.slug) == keys.slug_key("agents", meta.org, meta.slug)


def test_new_ids_are_ulids_in_creation_order() -> None:
    from stigmer_core.ids import derived_id, is_valid_id, new_id

    made = [new_id("agt") for _ in range(2000)]  # many share a millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(is_valid_id(i, "agt") for i in made)
    derived = derived_id("ain", made[0], "default")
    assert is_valid_id(derived, "ain") and derived[4:14] == made[0][4:14]
    assert derived == derived_id("ain", made[0], "default") != derived_id("ain", made[1], "default")


def _watch_access_of(decl: KindDeclaration) -> Any:
    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("Only", decl), name="only")
    return build_registry(pm).kind(decl.name).watch_access


def test_a_watch_needs_what_the_kinds_list_needs_unless_declared() -> None:
    from stigmer_core import Access

    assert _watch_access_of(AGENT) is Access.READ
    assert _watch_access_of(attrs.evolve(AGENT, access={"list": Access.ADMIN})) is Access.ADMIN
    assert _watch_access_of(attrs.evolve(AGENT, access={"list": Access.ADMIN, "watch": Access.WRITE})) is Access.WRITE
    with pytest.raises(RegistryError, match=r"'watched'.*neither a standard operation nor 'watch'"):
        _watch_access_of(attrs.evolve(AGENT, access={"watched": Access.READ}))


def test_a_transactional_step_declared_for_apply_is_refused() -> None:
    """Apply's transaction runs create's or update's steps and answers with their result: a KIND
    step of apply's own would run after the object is saved, its changes lost."""

    @step(Phase.KIND)
    def suffix_name(ctx: Any) -> None:
        return None

    bad = attrs.evolve(AGENT, steps={**AGENT.steps, "apply": (suffix_name,)})
    with pytest.raises(
        RegistryError,
        match=r"plugin 'p': kind 'Agent': steps of 'apply': step 'suffix_name' \(phase KIND\) runs inside the "
        r"transaction.*steps\['create'\] and steps\['update'\]",
    ):
        _build(("p", _plugin("A", bad)))


def test_a_pre_transaction_step_declared_for_apply_runs_before_it() -> None:
    @step(Phase.VALIDATE)
    def check_name(ctx: Any) -> None:
        return None

    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("A", attrs.evolve(AGENT, steps={**AGENT.steps, "apply": (check_name,)})), name="p")
    pipeline = build_registry(pm).kind("Agent").pipelines["apply"]
    assert "check_name" in [s.name for s in pipeline.pre]
    assert "check_name" not in [s.name for s in pipeline.txn]


def _agent_kind_with_index(values: Any) -> Any:
    from stigmer_core.kinds.declaration import IndexSpec

    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("Only", attrs.evolve(AGENT, indexes=(IndexSpec("format", values),))), name="only")
    return build_registry(pm).kind("Agent")


def _stored_agent() -> Any:
    agent = AGENT.resource()
    agent.metadata.id = "agt-01h00000000000000000000000"
    agent.metadata.org = "acme"
    return agent


def test_an_index_value_given_as_a_string_is_refused_naming_kind_and_index() -> None:
    """A string is iterable: taken as an entry, 'csv' was indexed as c/s/v and no query matched."""
    from stigmer_core import PluginFault

    kind = _agent_kind_with_index(lambda obj: ["csv"])
    with pytest.raises(
        PluginFault,
        match=r"plugin 'only': kind 'Agent': index 'format': values returned the string 'csv' as an entry; "
        r"return \[\('csv',\)\], not \['csv'\]",
    ):
        kind.index_keys(_stored_agent())


@pytest.mark.parametrize(("entry", "shown"), [((3,), r"\(3,\)"), ((b"csv",), r"\(b'csv',\)"), (None, "None")])
def test_an_index_value_that_is_not_a_string_is_refused_naming_kind_and_index(entry: Any, shown: str) -> None:
    from stigmer_core import PluginFault

    kind = _agent_kind_with_index(lambda obj: [entry])
    with pytest.raises(
        PluginFault, match=rf"kind 'Agent': index 'format': values returned the entry {shown} \(each entry must be"
    ):
        kind.index_keys(_stored_agent())


def test_a_write_through_a_wrong_index_answers_naming_it_and_stores_nothing(tmp_path: Any) -> None:
    import grpc

    from stigmer_core import Application
    from stigmer_core.kind_client import KindClient
    from stigmer_core.kinds.declaration import IndexSpec
    from stigmer_core.store.lmdb_store import LmdbStore
    from tests.widget_kind import WIDGET

    bad = attrs.evolve(
        WIDGET, indexes=(WIDGET.indexes[0], IndexSpec("color", lambda obj: [obj.metadata.name])), list_filters={}
    )
    pm = plugin_manager(plugins=[_plugin("Widgets", bad)])
    with Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        widget = WIDGET.resource()
        widget.metadata.name = "csv"
        with pytest.raises(grpc.RpcError) as caught:
            widgets.create(widget)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "kind 'Widget': index 'color': values returned the string 'csv'" in caught.value.details()
        assert list(widgets.list_all()) == []


def test_a_list_filter_field_no_filter_reads_is_refused_not_ignored(tmp_path: Any) -> None:
    """A release that drops a filter's index and leaves its field in the list request answered a
    list filtering by it with every object, as if filtered; a kind whose own list step may read
    the field is left to it."""
    import grpc

    from stigmer_core import Application, Phase, from_rpc_error
    from stigmer_core.kind_client import KindClient
    from stigmer_core.pipeline.step import FunctionStep
    from stigmer_core.store.lmdb_store import LmdbStore
    from tests.widget_kind import WIDGET

    def filters_itself(ctx: Any) -> None:
        ctx.scratch["seen color"] = ctx.request.color

    unfiltered = attrs.evolve(WIDGET, indexes=WIDGET.indexes[:1], list_filters={})
    own_step = attrs.evolve(unfiltered, steps={"list": (FunctionStep("filters_itself", Phase.VALIDATE, filters_itself),)})
    for n, (decl, refused) in enumerate(((unfiltered, True), (own_step, False), (WIDGET, False))):
        pm = plugin_manager(plugins=[_plugin("Widgets", decl)])
        with Application(build_registry(pm), LmdbStore(tmp_path / str(n), durable=False), pm) as app:
            widgets = KindClient(app.channel(), app.registry.kind("Widget"))
            for color in (1, 2):
                widget = WIDGET.resource()
                widget.metadata.name = f"w{color}"
                widget.spec.color = color
                widgets.create(widget)
            listing = widgets._new("list")
            listing.color = 1
            if refused:
                with pytest.raises(grpc.RpcError) as caught:
                    widgets.call("list", listing)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert [v.field for v in from_rpc_error(caught.value).violations] == ["color"]
                assert "lists widget objects by no such filter" in caught.value.details()
                assert len(list(widgets.list_all())) == 2, "a list without the field is served"
            else:
                assert len(widgets.call("list", listing).entries) == (2 if decl is own_step else 1)


def test_a_resource_given_as_its_descriptor_is_refused_naming_the_plugin() -> None:
    bad = attrs.evolve(AGENT, resource=AGENT.resource.DESCRIPTOR)
    with pytest.raises(
        RegistryError,
        match=r"plugin 'p': kind 'Agent': resource must be the generated message class .*not the descriptor of "
        r"stigmer.agentic.agent.v1.Agent",
    ):
        _build(("p", _plugin("A", bad)))


def test_a_service_given_as_its_file_is_refused_naming_the_plugin() -> None:
    bad = attrs.evolve(AGENT, query_service=AGENT.query_service.file)
    with pytest.raises(RegistryError, match=r"plugin 'p': kind 'Agent': query_service must be a ServiceDescriptor"):
        _build(("p", _plugin("A", bad)))


def test_a_resource_lacking_the_envelope_names_the_plugin() -> None:
    from google.protobuf import empty_pb2

    with pytest.raises(
        RegistryError, match=r"^plugin 'p': kind 'Agent': resource google.protobuf.Empty lacks api_version, kind"
    ):
        _build(("p", _plugin("A", attrs.evolve(AGENT, resource=empty_pb2.Empty))))


def test_an_unforeseen_failure_compiling_a_kind_names_the_plugin() -> None:
    bad = attrs.evolve(AGENT)
    object.__setattr__(bad, "mutable", (7,))  # past the declaration's own checks, as a subclass's value may be
    with pytest.raises(RegistryError, match=r"^plugin 'p': kind 'Agent': cannot be compiled: AttributeError: "):
        _build(("p", _plugin("A", bad)))


def test_a_printer_column_of_an_unknown_type_says_which_types_there_are() -> None:
    from stigmer_core import PrinterColumn

    with pytest.raises(ValueError, match=r"^printer column 'X': type 'text' is not one of 'string', 'integer'"):
        PrinterColumn("X", "spec.instructions", type="text")


def test_a_plain_error_in_stigmer_configure_names_the_plugin(tmp_path: Any) -> None:
    from stigmer_core import Application, StartupError
    from stigmer_core.store.lmdb_store import LmdbStore

    class Flaky:
        @hookimpl
        def stigmer_configure(self, registry: Any) -> None:
            raise RuntimeError("region lookup failed")

    class Refusing:
        @hookimpl
        def stigmer_configure(self, store: Any, registry: Any) -> None:
            raise StartupError("acme: the REGION setting is missing")

    for plugin, expected in (
        (Flaky(), "plugin 'flaky': stigmer_configure raised RuntimeError: region lookup failed"),
        (Refusing(), "acme: the REGION setting is missing"),  # the plugin's own words, as they are
    ):
        pm = plugin_manager()
        pm.register(plugin, name=type(plugin).__name__.lower())
        store = LmdbStore(tmp_path / type(plugin).__name__, durable=False)
        try:
            with pytest.raises(StartupError) as caught:
                Application(build_registry(pm), store, pm)
        finally:
            store.close()
        assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ("spec.env_id", r"stigmer.agentic.agent.v1.AgentSpec has no field 'env_id'"),
        ("metadata.name.id", r"'metadata.name' is not a message, so it has no field 'id'"),
    ],
)
def test_a_reference_to_a_field_that_does_not_exist_says_so(field: str, why: str) -> None:
    from stigmer_core import Reference

    bad = attrs.evolve(AGENT, references=(Reference(field, "Agent"),))
    with pytest.raises(RegistryError, match=rf"^plugin 'p': kind 'Agent': reference field '{field}' does not exist: {why}$"):
        _build(("p", _plugin("A", bad)))


def test_a_list_filter_on_a_field_that_does_not_exist_says_so() -> None:
    from stigmer_core import IndexSpec

    bad = attrs.evolve(AGENT, indexes=(IndexSpec("format", lambda obj: []),), list_filters={"fmt": "format"})
    with pytest.raises(
        RegistryError,
        match=r"^plugin 'p': kind 'Agent': list filter field 'fmt' does not exist: "
        r"stigmer.agentic.agent.v1.ListAgentsRequest has no field 'fmt'$",
    ):
        _build(("p", _plugin("A", bad)))


def test_a_duplicate_index_and_the_reserved_name_are_told_apart_naming_the_index() -> None:
    from stigmer_core import IndexSpec

    twice = attrs.evolve(AGENT, indexes=(IndexSpec("format", lambda obj: []), IndexSpec("format", lambda obj: [])))
    with pytest.raises(RegistryError, match=r"^plugin 'p': kind 'Agent': index 'format' is declared twice$"):
        _build(("p", _plugin("A", twice)))
    reserved = attrs.evolve(AGENT, indexes=(IndexSpec("_label", lambda obj: []),))
    with pytest.raises(RegistryError, match=r"^plugin 'p': kind 'Agent': index name '_label' is reserved"):
        _build(("p", _plugin("A", reserved)))


def test_an_empty_key_prefix_is_refused_as_empty_not_as_an_overlap() -> None:
    empty = attrs.evolve(AGENT, name="Other", id_prefix="oth", key_prefix="")
    with pytest.raises(RegistryError, match=r"^plugin 'second': kind 'Other': key prefix must not be empty$"):
        _build(("first", _plugin("A", AGENT)), ("second", _plugin("B", empty)))


@pytest.mark.parametrize("prefix", ["DataSets", "data/sets", "data_sets", "---"])
def test_a_prefix_outside_letters_digits_and_dashes_says_what_is_allowed(prefix: str) -> None:
    bad = attrs.evolve(AGENT, key_prefix=prefix)
    with pytest.raises(
        RegistryError, match=rf"^plugin 'p': kind 'Agent': key prefix '{prefix}' must be lowercase letters, digits and dashes$"
    ):
        _build(("p", _plugin("A", bad)))


def test_prefixes_with_dashes_and_digits_are_accepted() -> None:
    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("A", attrs.evolve(AGENT, key_prefix="agents-v2", id_prefix="a-2")), name="p")
    assert build_registry(pm).kind("Agent").key_prefix == "agents-v2"


def test_a_bare_step_decorator_declares_a_kind_step() -> None:
    """docs/plugins.md calls KIND the default phase of ``@step``: written without parentheses, it
    left the decorator in the step list."""

    @step
    def stamp(ctx: Any) -> None:
        ctx.resource.spec.description = "stamped"

    assert (stamp.name, stamp.phase) == ("stamp", Phase.KIND)
    pm = plugin_manager(entry_points=False)
    pm.register(_plugin("A", attrs.evolve(AGENT, steps={"create": (stamp,)})), name="p")
    assert "stamp" in [s.name for s in build_registry(pm).kind("Agent").pipelines["create"].txn]


@pytest.mark.parametrize("given", ["validate", 3])
def test_a_step_given_no_phase_says_what_it_takes(given: Any) -> None:
    with pytest.raises(TypeError, match=r"@step takes a Phase \(such as Phase.VALIDATE\), not"):
        step(given)


@pytest.mark.parametrize("phase", [Phase.VALIDATE, Phase.KIND], ids=["before-the-transaction", "in-it"])
def test_a_step_that_breaks_is_named_in_its_internal_error(
    tmp_path: Any, phase: Phase, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a plugin's step reached its client as 'internal error: KeyError', naming no step."""
    import grpc

    from stigmer_core import Application
    from stigmer_core.kind_client import KindClient
    from stigmer_core.store.lmdb_store import LmdbStore
    from tests.widget_kind import WIDGET

    @step(phase)
    def normalize(ctx: Any) -> None:
        _ = {}["region"]

    bad = attrs.evolve(WIDGET, steps={"create": (normalize,)})
    pm = plugin_manager(plugins=[_plugin("Widgets", bad)])
    with Application(build_registry(pm), LmdbStore(tmp_path, durable=False), pm) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        widget = WIDGET.resource()
        widget.metadata.name = "w"
        with pytest.raises(grpc.RpcError) as caught:
            widgets.create(widget)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == (
            "internal error in step 'normalize' of Widget create: KeyError (the server's log has its traceback)"
        )
        assert list(widgets.list_all()) == []
    logged = [r for r in caplog.records if "step 'normalize'" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


class _Returns:
    """A plugin whose ``stigmer_kinds`` returns ``value`` as it is."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @hookimpl
    def stigmer_kinds(self) -> Any:
        return self.value


def test_a_hook_returning_none_is_refused_naming_the_plugin() -> None:
    """A forgotten ``return`` left the plugin's kinds missing, with nothing said."""
    told = r"^plugin 'p': stigmer_kinds returned None \(no return statement\?\); it must return a list of KindDeclaration"
    with pytest.raises(RegistryError, match=told):
        _build(("p", _Returns(None)))


def test_a_hook_returning_one_declaration_says_a_list_is_expected() -> None:
    with pytest.raises(RegistryError) as refused:
        _build(("p", _Returns(AGENT)))
    assert str(refused.value) == (
        "plugin 'p': stigmer_kinds returned one KindDeclaration (kind 'Agent'), not a list; "
        "it must return a list of KindDeclaration (an empty list for none), such as [AGENT]"
    )
    assert "raised" not in str(refused.value)
    with pytest.raises(RegistryError, match=r"^plugin 'p': stigmer_kinds returned a int; it must return a list"):
        _build(("p", _Returns(3)))


def test_a_declaration_without_a_name_is_refused() -> None:
    unnamed = attrs.evolve(AGENT, name="")
    with pytest.raises(RegistryError, match=r"^plugin 'p': a kind declaration has no name \(name=''\)$"):
        _build(("p", _plugin("A", unnamed)))


def test_a_reference_on_an_enum_field_is_refused_at_start() -> None:
    from stigmer_core import Reference
    from tests.widget_kind import WIDGET

    bad = attrs.evolve(WIDGET, references=(Reference("spec.color", "Widget"),))
    with pytest.raises(
        RegistryError,
        match=r"^plugin 'p': kind 'Widget': reference field 'spec.color' is an enum; a reference holds ids, "
        r"in a string field$",
    ):
        _build(("p", _plugin("W", bad)))


class NamedPlugin:
    @hookimpl
    def stigmer_kinds(self) -> list[KindDeclaration]:
        return [attrs.evolve(AGENT, name="")]


class WrongParameter:
    @hookimpl
    def stigmer_kinds(self, registry: Any) -> list[KindDeclaration]:
        return []


def test_a_plugin_given_as_an_object_is_named_by_its_class() -> None:
    """Named by pluggy's default, its ``id()``, an error pointed at nothing a reader could find."""
    pm = plugin_manager(entry_points=False, plugins=[NamedPlugin()])
    named = r"^plugin 'tests.test_registry.NamedPlugin': a kind declaration has no name"
    with pytest.raises(RegistryError, match=named):
        build_registry(pm)
    two = plugin_manager(entry_points=False, plugins=[NamedPlugin(), NamedPlugin()])
    assert two.get_plugin("tests.test_registry.NamedPlugin#2") is not None
    with pytest.raises(RegistryError, match=r"^plugin 'tests.test_registry.WrongParameter': .*registry"):
        plugin_manager(entry_points=False, plugins=[WrongParameter()])


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"indexes": "one"}, "indexes must be a tuple of IndexSpec, not one str (a tuple of one needs its trailing comma"),
        ({"references": 3}, "references must be a tuple of Reference, not int"),
        ({"aliases": "wd"}, "aliases must be a tuple of str, not one str (a tuple of one needs its trailing comma: ('wd',))"),
        ({"printer_columns": [1]}, "printer_columns[0]: int given where a tuple of PrinterColumn belongs"),
        ({"steps": {"create": None}}, "steps['create'] must be a tuple of step, not NoneType"),
        ({"mutable": (7,)}, "mutable[0]: int given where a tuple of str belongs"),
        ({"plural": 7}, "KindDeclaration.plural must be a str, not int"),
        ({"key_prefix": None}, "KindDeclaration.key_prefix must be a str, not NoneType"),
        ({"redact": "blank_secrets"}, "KindDeclaration.redact must be callable or None, not str"),
        ({"exported": "no"}, "KindDeclaration.exported must be a bool, not str"),
        ({"apply_rank": "1"}, "KindDeclaration.apply_rank must be an int or None, not str"),
    ],
)
def test_a_declaration_value_of_the_wrong_type_is_refused_naming_its_field(given: dict[str, Any], said: str) -> None:
    """``indexes=(IndexSpec(...))`` (no trailing comma) stopped every command with "'IndexSpec'
    object is not iterable", naming no field; a string of aliases became its characters; a number
    for a name stopped every command with "'int' object has no attribute 'lower'"; a string for
    ``redact`` passed startup and failed each answer."""
    from stigmer_core.kinds.declaration import IndexSpec, Reference
    from tests.widget_kind import WIDGET

    with pytest.raises(TypeError) as caught:
        attrs.evolve(WIDGET, **given)
    assert said in str(caught.value)
    with pytest.raises(TypeError, match=r"^Reference.kind must be a str, not KindDeclaration$"):
        Reference("spec.owner_id", WIDGET)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"indexes must be a tuple of IndexSpec, not one IndexSpec .*\(IndexSpec\(\.\.\.\),\)"):
        attrs.evolve(WIDGET, indexes=(IndexSpec("x", lambda obj: [])))  # the mistake itself: no trailing comma
