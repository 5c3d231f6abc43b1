"""What a third-party plugin can get wrong at start-up stops the start with a message naming the
plugin, its distribution and what is wrong, instead of a kind silently missing, an exit with no
word of whose it was, or a daemon that starts and then fails every call.

Plugins here are real modules found through real ``stigmer.kinds`` entry points, as in
``tests/test_third_party_registry.py``: each test writes distributions (a ``.dist-info`` with its
``entry_points.txt``, what ``pip install`` leaves) into directories put on ``sys.path``; the
first-party kinds are found the same way, through stigmer-core's own entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import pytest

from stigmer_core import Application, KindDeclaration, RegistryError, StartupError, hookimpl
from stigmer_core.kinds.declaration import ENTRY_POINT_GROUP
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import Registry
from stigmer_core.plugins import plugin_manager, server_interceptors
from stigmer_core.server import Server
from tests.envelope_shapes import GOOD_METADATA, GOOD_RESOURCE, shaped
from tests.gizmo_kind import GIZMO

GIZMO_PLUGIN = """
    from stigmer_core import hookimpl
    from tests.gizmo_kind import GIZMO

    @hookimpl
    def stigmer_kinds():
        return [GIZMO]
"""


class Install(Protocol):
    def __call__(
        self, distribution: str, entry_point: str, source: str | None, *, module: str = "", site: Path | None = None
    ) -> Path: ...


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(distribution, entry_point, module_source)``: a one-module plugin distribution in
    a site directory on ``sys.path`` (``site``: another one, put first), whose entry point names
    ``module`` (default: the distribution's name as a module); ``module_source`` None: no module
    is written (the entry point names one that exists already). Returns the site directory."""
    default = tmp_path / "site-packages"
    default.mkdir()
    monkeypatch.syspath_prepend(str(default))
    created: list[str] = []

    def add(
        distribution: str, entry_point: str, source: str | None, *, module: str = "", site: Path | None = None
    ) -> Path:
        where = site or default
        if site is not None and str(site) not in sys.path:
            site.mkdir(parents=True, exist_ok=True)
            monkeypatch.syspath_prepend(str(site))
        module = module or distribution.replace("-", "_")
        if source is not None:
            (where / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = where / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point} = {module}\n")
        importlib.invalidate_caches()
        return where

    yield add
    for module in created:
        sys.modules.pop(module, None)


def _refusal(start: Callable[[], object], kind: type[BaseException] = RegistryError) -> str:
    """The message ``start()`` stops with. Anything else it raises (a ``SystemExit`` or a
    ``KeyboardInterrupt`` let through) fails the test here rather than ending the session."""
    try:
        start()
    except BaseException as exc:  # what is asserted is exactly what got through
        assert isinstance(exc, kind), f"{type(exc).__name__}: {exc}"
        return str(exc)
    raise AssertionError("it started")


def _build() -> Registry:
    return build_registry(plugin_manager())


# 5. Entry-point names: a plugin's name is its entry point's, and names one plugin only.


@pytest.mark.parametrize("name", ["apitoken", "agent", "session"])
def test_an_entry_point_named_like_a_first_party_plugin_is_refused_naming_both(install: Install, name: str) -> None:
    """``apitoken`` took the built-in ApiToken kind away with nothing said; ``agent`` and
    ``session`` then failed as a first-party kind referencing an unknown kind 'Agent'."""
    site = install("acme-gizmo", name, GIZMO_PLUGIN)
    message = _refusal(plugin_manager)
    assert message.startswith(f"plugin name {name!r} is the name of two stigmer.kinds entry points: "), message
    assert "distribution 'stigmer-core' " in message and f"({name} = stigmer_plugins.{name}, in " in message
    assert f"distribution 'acme-gizmo' 0.1.0 ({name} = acme_gizmo, in {site})" in message
    assert "rename one of the entry points, or uninstall one of the distributions" in message


def test_two_distributions_naming_their_entry_points_alike_are_refused(install: Install) -> None:
    """Which one was loaded depended on ``sys.path`` order; the other vanished."""
    install("acme-gizmo", "plugin", GIZMO_PLUGIN)
    install(
        "acme-other", "plugin", "from stigmer_core import hookimpl\n@hookimpl\ndef stigmer_kinds():\n    return []\n"
    )
    message = _refusal(plugin_manager)
    assert message.startswith("plugin name 'plugin' is the name of two stigmer.kinds entry points: "), message
    one, two = message.index("'acme-gizmo'"), message.index("'acme-other'")
    assert one < two  # named in a fixed order, whichever sys.path lists first
    assert "(plugin = acme_gizmo, in " in message and "(plugin = acme_other, in " in message


def test_the_same_distribution_found_twice_on_sys_path_is_one_plugin(
    install: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory listed twice gives the very same ``.dist-info`` twice, and an editable install
    beside an installed copy gives two: one distribution, whose entry point names one object."""
    site = install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    monkeypatch.syspath_prepend(str(site))  # now on sys.path twice
    install("acme-gizmo", "acme-gizmo", None, module="acme_gizmo", site=tmp_path / "editable")
    named = [dist for dist in importlib.metadata.distributions() if dist.metadata["Name"] == "acme-gizmo"]
    assert len(named) == 3  # what importlib.metadata reports: every copy, each time it is found
    registry = _build()
    assert registry.kind("Gizmo").plugin == "acme-gizmo"
    assert [k.name for k in registry.kinds].count("Gizmo") == 1


def test_a_copy_of_a_distribution_naming_another_object_is_refused(install: Install, tmp_path: Path) -> None:
    """A stale copy left behind whose entry point names another module: which loads would
    depend on ``sys.path`` order, so both are named with where they are installed."""
    install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    stale = install(
        "acme-gizmo", "acme-gizmo", GIZMO_PLUGIN, module="acme_gizmo_old", site=tmp_path / "stale-site-packages"
    )
    message = _refusal(plugin_manager)
    assert message.startswith("plugin name 'acme-gizmo' is the name of two stigmer.kinds entry points: "), message
    assert f"(acme-gizmo = acme_gizmo_old, in {stale})" in message
    assert "(acme-gizmo = acme_gizmo, in " in message


def test_two_entry_points_naming_one_module_are_refused_naming_both(install: Install) -> None:
    """pluggy refuses the second registration with a ValueError naming neither distribution."""
    install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    install("acme-gizmo-too", "acme-gizmo-too", None, module="acme_gizmo")
    message = _refusal(plugin_manager)
    assert message.startswith("plugins 'acme-gizmo' and 'acme-gizmo-too' are one object, named by two "), message
    assert "distribution 'acme-gizmo' 0.1.0 (acme-gizmo = acme_gizmo, in " in message
    assert "distribution 'acme-gizmo-too' 0.1.0 (acme-gizmo-too = acme_gizmo, in " in message


# 6. A BaseException from a plugin's code is reported like any exception, naming the plugin.


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("import sys\nsys.exit('acme: cannot find license file')\n", "SystemExit: acme: cannot find license file"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt (an interrupt: "),
        ("class Abort(BaseException):\n    pass\nraise Abort('acme abort')\n", "Abort: acme abort"),
    ],
)
def test_a_base_exception_while_a_plugin_imports_names_it(install: Install, source: str, shown: str) -> None:
    install("acme-bad", "acme-bad", source)
    message = _refusal(plugin_manager)
    assert message.startswith(
        f"plugin 'acme-bad': entry point acme-bad = acme_bad (distribution 'acme-bad') cannot be loaded: {shown}"
    ), message


def test_sys_exit_in_stigmer_kinds_names_the_plugin(install: Install) -> None:
    """It exited 3 with no output."""
    install(
        "acme-bad",
        "acme-bad",
        "import sys\nfrom stigmer_core import hookimpl\n@hookimpl\ndef stigmer_kinds():\n    sys.exit(3)\n",
    )
    assert _refusal(_build) == "plugin 'acme-bad': stigmer_kinds raised SystemExit: 3"


def test_sys_exit_in_stigmer_configure_names_the_plugin(install: Install, tmp_path: Path) -> None:
    install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    install(
        "acme-audit",
        "audit",
        """
        import sys
        from stigmer_core import hookimpl

        @hookimpl
        def stigmer_configure(registry):
            sys.exit("audit: fatal")
        """,
    )
    message = _refusal(lambda: Application.open(tmp_path / "data"), StartupError)
    assert message == "plugin 'audit': stigmer_configure raised SystemExit: audit: fatal"


def test_a_base_exception_in_stigmer_pipeline_steps_names_the_plugin(install: Install) -> None:
    install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    install(
        "acme-audit",
        "audit",
        """
        from stigmer_core import hookimpl

        class Abort(BaseException):
            pass

        @hookimpl
        def stigmer_pipeline_steps(kind, operation):
            raise Abort("audit: no sink")
        """,
    )
    message = _refusal(_build)
    assert message.startswith("plugin 'audit': stigmer_pipeline_steps for kind "), message
    assert message.endswith(" raised Abort: audit: no sink"), message


# 7. A hook's error names the plugin whose hook it is.


def test_a_generator_from_stigmer_kinds_that_raises_names_the_plugin(install: Install) -> None:
    """It was "unexpected error: KeyError": the generator ran outside the hook's try."""
    install(
        "acme-bad",
        "acme-bad",
        """
        from stigmer_core import hookimpl

        def _make(name):
            raise KeyError(name)

        @hookimpl
        def stigmer_kinds():
            return (_make(name) for name in ["gizmo"])
        """,
    )
    message = _refusal(_build)
    assert message == "plugin 'acme-bad': stigmer_kinds raised KeyError: 'gizmo' (while what it returned was read)"


_AUDIT_STEPS = """
    from stigmer_core import Phase, hookimpl, step

    @step(Phase.AUTHORIZE)
    def audit(ctx):
        pass

    def plain(ctx):
        pass

    @hookimpl
    def stigmer_pipeline_steps(kind, operation):
        if operation != "create":
            return []
        {body}
"""


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (
            "raise RuntimeError('audit misconfigured')",
            "plugin 'audit': stigmer_pipeline_steps for kind 'Gizmo', operation 'create' raised "
            "RuntimeError: audit misconfigured",
        ),
        (
            "return audit",
            "plugin 'audit': kind 'Gizmo': stigmer_pipeline_steps for 'create' returned one step ('audit'), "
            "not a list; it must return a list of steps (an empty list for none), such as [audit]",
        ),
        (
            "return [plain]",
            "plugin 'audit': kind 'Gizmo': stigmer_pipeline_steps for 'create': function 'plain' is not a step",
        ),
        (
            "return 7",
            "plugin 'audit': kind 'Gizmo': stigmer_pipeline_steps for 'create' returned a int; it must return a list",
        ),
    ],
)
def test_stigmer_pipeline_steps_errors_name_the_hooks_plugin_not_the_kinds(
    install: Install, body: str, shown: str
) -> None:
    """They blamed the kind's plugin ('acme-gizmo'), which has no say in what another adds."""
    install("acme-gizmo", "acme-gizmo", GIZMO_PLUGIN)
    install("acme-audit", "audit", _AUDIT_STEPS.format(body=body))
    message = _refusal(_build)
    assert message.startswith(shown), message
    assert "acme-gizmo" not in message


_INTERCEPTORS = """
    import grpc
    from stigmer_core import hookimpl

    class Passing(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            return continuation(details)

    class AsyncPassing(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            return await continuation(details)

    FIRST, SECOND = Passing(), Passing()

    @hookimpl
    def stigmer_server_interceptors():
        {body}
"""


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (
            "raise RuntimeError('interceptor config broken')",
            "plugin 'audit': stigmer_server_interceptors raised RuntimeError: interceptor config broken",
        ),
        (
            "raise SystemExit(4)",
            "plugin 'audit': stigmer_server_interceptors raised SystemExit: 4",
        ),
        (
            "return ['not an interceptor']",
            "plugin 'audit': stigmer_server_interceptors returned a str ('not an interceptor'), which is not a "
            "grpc.ServerInterceptor; it must return a list of grpc.ServerInterceptor (an empty list for none)",
        ),
        (
            "return [Passing]",
            "plugin 'audit': stigmer_server_interceptors returned the class Passing (an instance of it is what is "
            "installed), which is not a grpc.ServerInterceptor",
        ),
        (
            "return [AsyncPassing()]",
            "plugin 'audit': stigmer_server_interceptors returned a AsyncPassing (",
        ),
        (
            "return Passing()",
            "plugin 'audit': stigmer_server_interceptors returned one Passing, not a list",
        ),
    ],
)
def test_stigmer_server_interceptors_errors_name_the_plugin(install: Install, body: str, shown: str) -> None:
    """Raising was "unexpected error: RuntimeError"; a non-interceptor started a daemon that
    answered every call "Error in service handler!"."""
    install("acme-audit", "audit", _INTERCEPTORS.format(body=body))
    message = _refusal(lambda: server_interceptors(plugin_manager()))
    assert message.startswith(shown), message
    if "Async" in body:
        assert "(a grpc.aio interceptor: these run on grpc's sync server)" in message


def test_interceptors_are_returned_in_the_order_pluggy_calls_their_hooks(install: Install) -> None:
    install("acme-audit", "audit", _INTERCEPTORS.format(body="return [FIRST, SECOND]"))
    install("acme-metrics", "metrics", _INTERCEPTORS.format(body="return [FIRST]"))
    install("acme-none", "none", _INTERCEPTORS.format(body="return None"))
    pm = plugin_manager()
    found = server_interceptors(pm)
    audit, metrics = (importlib.import_module(name) for name in ("acme_audit", "acme_metrics"))
    assert found == [i for listed in pm.hook.stigmer_server_interceptors() for i in listed]
    assert sorted(map(id, found)) == sorted(map(id, [audit.FIRST, audit.SECOND, metrics.FIRST]))


def test_a_daemon_with_a_wrong_interceptor_does_not_start(install: Install, tmp_path: Path) -> None:
    """It started, and answered every call "Error in service handler!"; now the start is refused
    before a thread or a port is taken."""
    install("acme-audit", "audit", _INTERCEPTORS.format(body="return ['x']"))
    app = Application.open(tmp_path / "data")
    try:
        message = _refusal(lambda: Server(app, "127.0.0.1:0"))
    finally:
        app.close()
    assert message.startswith("plugin 'audit': stigmer_server_interceptors returned a str ('x')"), message


# 8. Envelope fields of the wrong type are refused at startup, naming kind, field and type.


def _explicit(decl: KindDeclaration) -> Callable[[], Registry]:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    def build() -> Registry:
        pm = plugin_manager(entry_points=False)
        pm.register(Plugin(), name="acme")
        return build_registry(pm)

    return build


def _with(fields: tuple[tuple[str, str], ...], name: str, kind: str) -> tuple[tuple[str, str], ...]:
    """``fields`` with ``name`` of type ``kind`` (added when it is not there)."""
    if name not in dict(fields):
        return (*fields, (name, kind))
    return tuple((n, kind if n == name else k) for n, k in fields)


_PREFIX = "plugin 'acme': kind 'Shape': resource tests.shapes.{}.v1.Shape has fields of the wrong type: "


@pytest.mark.parametrize(
    ("variant", "resource", "metadata", "shown"),
    [
        ("kind_int", ("kind", "int64"), None, "kind is int64; it must be string"),
        ("api_version_many", ("api_version", "repeated string"), None, "api_version is repeated string; it must be"),
        (
            "metadata_many",
            ("metadata", "repeated ApiResourceMetadata"),
            None,
            "metadata is repeated message stigmer.commons.apiresource.v1.ApiResourceMetadata; "
            "it must be a singular message",
        ),
        ("spec_many", ("spec", "repeated Spec"), None, "spec is repeated message tests.shapes.spec_many.v1.Spec;"),
        ("status_text", ("status", "string"), None, "status is string; it must be a singular message"),
        ("name_int", ("metadata", "Meta"), ("name", "int32"), "metadata.name is int32; it must be string"),
        (
            "labels_list",
            ("metadata", "Meta"),
            ("labels", "repeated string"),
            "metadata.labels is repeated string; it must be map<string, string>",
        ),
        (
            "labels_ints",
            ("metadata", "Meta"),
            ("labels", "map<string, int32>"),
            "metadata.labels is map<string, int32>; it must be map<string, string>",
        ),
        ("tags_one", ("metadata", "Meta"), ("tags", "string"), "metadata.tags is string; it must be repeated string"),
        (
            "annotations_list",
            ("metadata", "Meta"),
            ("annotations", "repeated string"),
            "metadata.annotations is repeated string; it must be map<string, string>",
        ),
        (
            "version_text",
            ("metadata", "Meta"),
            ("resource_version", "string"),
            "metadata.resource_version is string; it must be a 64-bit integer (int64)",
        ),
        (
            "owners_text",
            ("metadata", "Meta"),
            ("owner_references", "repeated string"),
            "metadata.owner_references is repeated string; it must be repeated "
            "stigmer.commons.apiresource.v1.OwnerReference",
        ),
    ],
)
def test_an_envelope_field_of_the_wrong_type_is_refused_at_startup(
    variant: str, resource: tuple[str, str], metadata: tuple[str, str] | None, shown: str
) -> None:
    """It started, and every create was INTERNAL when the framework stamped the field."""
    decl = shaped(
        variant,
        resource=_with(GOOD_RESOURCE, *resource),
        metadata=_with(GOOD_METADATA, *metadata) if metadata else GOOD_METADATA,
    )
    message = _refusal(_explicit(decl))
    assert message.startswith(_PREFIX.format(variant) + shown), message


def test_timestamps_are_checked_when_both_are_there() -> None:
    """``created_at`` and ``updated_at`` are stamped only when the metadata has both."""
    wrong = (*GOOD_METADATA, ("created_at", "string"), ("updated_at", "Timestamp"))
    message = _refusal(
        _explicit(shaped("created_text", resource=_with(GOOD_RESOURCE, "metadata", "Meta"), metadata=wrong))
    )
    assert (
        message
        == _PREFIX.format("created_text") + "metadata.created_at is string; it must be google.protobuf.Timestamp"
    )
    alone = (*GOOD_METADATA, ("created_at", "string"))
    registry = _explicit(shaped("created_alone", resource=_with(GOOD_RESOURCE, "metadata", "Meta"), metadata=alone))()
    assert not registry.kind("Shape").shape.has_timestamps


def test_every_wrong_field_is_named_at_once() -> None:
    resource = _with(_with(GOOD_RESOURCE, "kind", "int64"), "metadata", "Meta")
    message = _refusal(
        _explicit(shaped("two_wrong", resource=resource, metadata=_with(GOOD_METADATA, "name", "int32")))
    )
    assert message == _PREFIX.format("two_wrong") + (
        "kind is int64; it must be string, and metadata.name is int32; it must be string"
    )


def test_a_metadata_message_of_its_own_with_the_right_fields_is_served(tmp_path: Path) -> None:
    """Any message with the fields the framework writes will do, not only ApiResourceMetadata."""
    metadata = (
        *GOOD_METADATA,
        ("resource_version", "uint64"),
        ("created_at", "Timestamp"),
        ("updated_at", "Timestamp"),
    )
    decl = shaped("own_metadata", resource=_with(GOOD_RESOURCE, "metadata", "Meta"), metadata=metadata)
    registry = _explicit(decl)()
    shape = registry.kind("Shape").shape
    assert shape.has_spec and shape.has_resource_version and shape.has_timestamps and not shape.has_status
    with Application.open(tmp_path / "data", pm=_pm_of(decl)) as app:
        call = app.channel().unary_unary(
            "/tests.shapes.own_metadata.v1.ShapeCommandController/create",
            request_serializer=decl.resource.SerializeToString,
            response_deserializer=decl.resource.FromString,
        )
        shape_obj: Any = decl.resource()
        shape_obj.metadata.name = "First"
        created = call(shape_obj, timeout=10)
    assert created.kind == "Shape" and created.metadata.id.startswith("shp-") and created.metadata.resource_version > 0


def _pm_of(decl: KindDeclaration) -> Any:
    class Plugin:
        @hookimpl
        def stigmer_kinds(self) -> list[KindDeclaration]:
            return [decl]

    return plugin_manager(plugins=[Plugin()])


# 10. Kind names.


@pytest.mark.parametrize("name", ["Giz/Moz", "Giz Moz", "Giz.Moz", "Giz=Moz", "9Lives", "_Gizmo", "Gizmö", "G" * 64])
def test_a_kind_name_that_is_not_letters_and_digits_is_refused(name: str) -> None:
    """``Giz/Moz`` was served: its name goes into store keys, documents and command lines."""
    message = _refusal(_explicit(attrs.evolve(GIZMO, name=name, plural="", aliases=())))
    assert message == (
        f"plugin 'acme': kind {name!r}: the name must be an ASCII letter followed by letters and digits, 63 at "
        "most (CamelCase, like McpServer): it is written into store keys, documents and the CLI's arguments"
    )


@pytest.mark.parametrize("name", ["Gizmo", "GIZMO", "Gizmo2", "gizmo", "G" * 63])
def test_kind_names_of_letters_and_digits_are_served(name: str) -> None:
    registry = _explicit(attrs.evolve(GIZMO, name=name, plural="", aliases=()))()
    assert registry.kind(name).name == name
