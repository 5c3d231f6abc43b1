"""Builds the Registry from plugins, rejecting at startup what cannot be served.

Every rejection names the plugin (or both plugins) involved, because the
person reading it is usually installing someone else's package.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pluggy
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from stigmer_core.auth.access import READ_OPERATIONS, Access
from stigmer_core.errors import RegistryError
from stigmer_core.kinds.calls import call_refused
from stigmer_core.kinds.declaration import (
    STANDARD_OPERATIONS,
    WATCH_ACCESS,
    WRITE_OPERATIONS,
    IndexSpec,
    KindDeclaration,
    PrinterColumn,
)
from stigmer_core.kinds.releases import plugin_releases
from stigmer_core.kinds.runtime import (
    LABEL_INDEX,
    CompiledReference,
    FieldPath,
    KindRuntime,
    ListFilter,
    ListShape,
    MethodBinding,
    Pipeline,
    Registry,
    ResourceShape,
    _is_map,
    _is_repeated,
    _type_of,
)
from stigmer_core.kinds.secret_fields import SecretFields
from stigmer_core.pipeline import steps as standard
from stigmer_core.pipeline.answers import BlanksAnswer, blank_sent
from stigmer_core.pipeline.defaults import DEFAULT_PIPELINES, WATCH_PIPELINE
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep, Step
from stigmer_core.pipeline.watch import watch_events
from stigmer_core.plugins import check, hook_results, listed, raised
from stigmer_core.store import keys

log = logging.getLogger(__name__)

_STRING = FieldDescriptor.TYPE_STRING
_PREFIX = re.compile(r"[a-z0-9-]*[a-z0-9][a-z0-9-]*")
_KIND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
"""A kind's name: an ASCII letter, then letters and digits, 63 at most (``McpServer``). It is a
YAML document's ``kind``, a word on the CLI's command line, part of the store's ``m/kinds/<name>``
key and of the ``Kind=n`` entries of ``stigmer-removed-count`` (split at spaces and ``=``), and an
owner reference's ``kind`` (at most 63 characters): a ``/``, a space, a dot or an ``=`` in it
breaks one of them."""
_CLI_WORD = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
"""A kind's plural or alias: as its name, with dashes between words (``agent-instance``). The CLI
takes it as one word of a command line (``stigmer get giz mo`` is two) and before the ``/`` of
``kind/name``, and a document's ``kind`` may give it."""


def build_registry(pm: pluggy.PluginManager, *, default_org: str = "local") -> Registry:
    check(pm)
    declared: list[tuple[str, KindDeclaration]] = []
    for impl in pm.hook.stigmer_kinds.get_hookimpls():  # registration order
        try:
            returned = impl.function()
        except BaseException as exc:  # the plugin's own code: name it, whatever it raised (sys.exit too)
            raise RegistryError(f"plugin {impl.plugin_name!r}: stigmer_kinds raised {raised(exc)}") from exc
        for decl in _declarations(impl.plugin_name, returned):
            if not isinstance(decl, KindDeclaration):
                raise RegistryError(
                    f"plugin {impl.plugin_name!r}: stigmer_kinds returned {type(decl).__name__}, not KindDeclaration"
                )
            declared.append((impl.plugin_name, decl))
    _check_unique(declared)
    kinds = tuple(_compiled(pm, plugin, decl) for plugin, decl in declared)
    shipped = plugin_releases(pm)
    for kind in kinds:
        kind.release = shipped.get(kind.plugin)
    registry = Registry(kinds, default_org=default_org)
    for kind in kinds:
        for ref in kind.references:
            if registry.find(ref.spec.kind) is None:
                raise _fail(
                    kind.plugin,
                    kind.decl,
                    f"reference {ref.spec.field!r} names unknown kind {ref.spec.kind!r}: no installed plugin serves "
                    f"it (was its package uninstalled?); install the package of kind {ref.spec.kind!r} again, or "
                    f"uninstall {kind.plugin!r} too (a package whose kinds reference another's should depend on it)",
                )
    return registry


def _declarations(plugin: str, returned: object) -> list[object]:
    """What a ``stigmer_kinds`` returned, as a list: anything else would leave its kinds missing
    with nothing said (None: a forgotten ``return``) or fail as if the hook had raised."""
    expected = "it must return a list of KindDeclaration (an empty list for none)"
    if returned is None:
        raise RegistryError(f"plugin {plugin!r}: stigmer_kinds returned None (no return statement?); {expected}")
    if isinstance(returned, KindDeclaration):
        raise RegistryError(
            f"plugin {plugin!r}: stigmer_kinds returned one KindDeclaration (kind {returned.name!r}), not a list; "
            f"{expected}, such as [{returned.name.upper() or 'DECLARATION'}]"
        )
    if isinstance(returned, (str, bytes, dict)) or not isinstance(returned, Iterable):
        raise RegistryError(f"plugin {plugin!r}: stigmer_kinds returned a {type(returned).__name__}; {expected}")
    return listed(plugin, "stigmer_kinds", returned)  # a generator runs the plugin's code only now


def _check_unique(declared: Sequence[tuple[str, KindDeclaration]]) -> None:
    for plugin, decl in declared:
        if not isinstance(decl.name, str) or not decl.name.strip():  # its objects would be stored as kind ''
            raise RegistryError(f"plugin {plugin!r}: a kind declaration has no name (name={decl.name!r})")
        if not _KIND_NAME.fullmatch(decl.name):
            raise _fail(
                plugin, decl,
                "the name must be an ASCII letter followed by letters and digits, 63 at most (CamelCase, "
                "like McpServer): it is written into store keys, documents and the CLI's arguments",
            )  # fmt: skip
        others = [("plural", decl.plural)] if decl.plural else []
        others += [(f"aliases[{i}]", alias) for i, alias in enumerate(decl.aliases)]
        for what, other in others:
            if not _CLI_WORD.fullmatch(other):
                raise _fail(
                    plugin, decl,
                    f"{what} {other!r} must be an ASCII letter followed by letters, digits and dashes, not ending "
                    "with a dash, 63 at most (like mcp or agent-instances): the CLI takes it as one word of a "
                    "command line and documents may give it as their kind",
                )  # fmt: skip
    for plugin, decl in declared:  # first: an empty prefix is a byte-prefix of every other
        for label, value in (("key prefix", decl.key_prefix), ("id prefix", decl.id_prefix)):
            if not isinstance(value, str) or not value:
                raise _fail(plugin, decl, f"{label} must not be empty")
            if not _PREFIX.fullmatch(value):
                raise _fail(plugin, decl, f"{label} {value!r} must be lowercase letters, digits and dashes")
    for i, (plugin_a, a) in enumerate(declared):
        for plugin_b, b in declared[:i]:
            both = f"plugin {plugin_b!r} and plugin {plugin_a!r}"
            if a.name.lower() == b.name.lower():
                raise RegistryError(f"kind {a.name!r} is declared twice: by {both}")
            if a.id_prefix == b.id_prefix:
                raise RegistryError(
                    f"id prefix {a.id_prefix!r} of kinds {b.name!r} and {a.name!r} is declared by {both}"
                )
            if a.key_prefix.startswith(b.key_prefix) or b.key_prefix.startswith(a.key_prefix):
                raise RegistryError(
                    f"key prefixes overlap: {b.key_prefix!r} (kind {b.name!r}) and {a.key_prefix!r} "
                    f"(kind {a.name!r}), declared by {both}"
                )
    for i, (plugin_a, a) in enumerate(declared):  # after the store's clashes, which matter more
        words_a = _cli_names(a)
        for plugin_b, b in declared[:i]:
            words_b = _cli_names(b)
            word = names_overlap(words_a, words_b)
            if word is not None:
                raise RegistryError(
                    f"kind names overlap: {word!r} is {words_b[word]} of kind {b.name!r} and {words_a[word]} "
                    f"of kind {a.name!r}, declared by plugin {plugin_b!r} and plugin {plugin_a!r}; "
                    "the CLI could not tell which kind it names"
                )
    _check_bindings(declared)


def _cli_names(decl: KindDeclaration) -> dict[str, str]:
    return cli_names(decl.name, decl.plural, decl.aliases)


def cli_names(name: str, plural: object = "", aliases: Iterable[object] = ()) -> dict[str, str]:
    """Every name the CLI accepts for a kind (compared as kind names are: ignoring case),
    with what it is to the kind; ``stigmer kind new`` holds a new kind's names to the same rule."""
    found = {f"{name}s".lower(): "the implied plural"}
    found.update((alias.lower(), "an alias") for alias in aliases if isinstance(alias, str) and alias)
    if isinstance(plural, str) and plural:
        found[plural.lower()] = "the plural"
    found[name.lower()] = "the name"
    return found


def names_overlap(one: dict[str, str], other: dict[str, str]) -> str | None:
    """The first name two kinds' ``cli_names`` share: the CLI could not tell which kind it names."""
    shared = sorted(one.keys() & other.keys())
    return shared[0] if shared else None


def _check_bindings(declared: Sequence[tuple[str, KindDeclaration]]) -> None:
    """A gRPC service, or a resource message, belongs to one kind.

    The server routes an rpc by its service's full name, so a second kind bound
    to the same services would take over the first's calls (its objects
    unreachable, ``apply`` of the first writing the second); a CLI reading a
    server by reflection knows a kind by its resource message, so two kinds of
    one message would show as one. A fork of a kind needs protos of its own.
    """
    owners: dict[str, tuple[str, KindDeclaration]] = {}
    for plugin, decl in declared:
        services = (getattr(decl.command_service, "full_name", None), getattr(decl.query_service, "full_name", None))
        if isinstance(services[0], str) and services[0] == services[1]:
            # one service as both leaves the other's rpcs unserved, found only when the CLI
            # calls one ("the kind has no 'apply' rpc")
            raise _fail(
                plugin, decl,
                f"command_service and query_service are both {services[0]}: command_service must be the kind's "
                "command service (<Kind>CommandController: create, apply, update, delete) and query_service "
                "its query service (<Kind>QueryController: get, getByReference, list)",
            )  # fmt: skip
        resource = getattr(getattr(decl.resource, "DESCRIPTOR", None), "full_name", None)
        bound = [("service", name) for name in dict.fromkeys(services) if isinstance(name, str)]
        if isinstance(resource, str):
            bound.append(("resource message", resource))
        for what, name in bound:
            plugin_b, b = owners.setdefault(f"{what} {name}", (plugin, decl))
            if b is not decl:
                # named in a fixed order: which plugin loads first is the order of entry points
                (one, plugin_one), (two, plugin_two) = sorted([(b.name, plugin_b), (decl.name, plugin)])
                raise RegistryError(
                    f"{what} {name} is bound to kinds {one!r} and {two!r}, declared by plugin {plugin_one!r} "
                    f"and plugin {plugin_two!r}: each kind needs its own proto services and resource message"
                )


def _fail(plugin: str, decl: KindDeclaration, text: str) -> RegistryError:
    return RegistryError(f"plugin {plugin!r}: kind {decl.name!r}: {text}")


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    return desc.fields_by_name.get(name)


def _resolves(desc: Any, path: str) -> bool:
    for part in path.split("."):
        if desc is None or part not in desc.fields_by_name:
            return False
        desc = desc.fields_by_name[part].message_type
    return True


def _resolve_field(plugin: str, decl: KindDeclaration, descriptor: Any, path: str, what: str) -> FieldPath:
    """``path`` in ``descriptor``, or the startup refusal naming ``what`` it is and why."""
    try:
        return FieldPath.resolve(descriptor, path)
    except KeyError:
        raise _fail(plugin, decl, f"{what} {path!r} does not exist: {_missing(descriptor, path)}") from None
    except TypeError as exc:
        raise _fail(plugin, decl, f"{what} {path!r}: {exc}") from None


def _missing(desc: Any, path: str) -> str:
    """Where a dotted path leaves the message: the part that is not there, or not a message."""
    parent = ""
    for part in path.split("."):
        if desc is None:
            return f"{parent!r} is not a message, so it has no field {part!r}"
        if part not in desc.fields_by_name:
            return f"{desc.full_name} has no field {part!r}"
        desc = desc.fields_by_name[part].message_type
        parent = f"{parent}.{part}" if parent else part
    return f"{path!r} resolves"  # pragma: no cover - called only for a path that did not resolve


def _resource_field(resource: Any, request: Any) -> str | None:
    """For wrapper requests (``UpdateAgentInput{resource, update_mask}``)."""
    found = [f.name for f in request.fields if f.message_type is resource]
    return found[0] if len(found) == 1 else None


def _check_method(plugin: str, decl: KindDeclaration, method: MethodDescriptor) -> str | None:
    """Check a standard method's signature; return the wrapper field, if any."""
    resource = decl.resource.DESCRIPTOR
    where = f"rpc {method.full_name}"
    op, req, out = method.name, method.input_type, method.output_type
    wrapper = None
    if op != "list" and out is not resource:
        raise _fail(plugin, decl, f"{where} must return {resource.full_name}, not {out.full_name}")
    if op in ("create", "apply", "update") and req is not resource:
        wrapper = _resource_field(resource, req)
        if wrapper is None:
            raise _fail(plugin, decl, f"{where} must take {resource.full_name} or a message with one such field")
    elif op in ("get", "delete"):
        value = _field(req, "value")
        if value is None or value.type != _STRING:
            raise _fail(plugin, decl, f"{where} must take an id message with a string field 'value'")
    elif op == "getByReference":
        lacking = [n for n in ("org", "slug", "id", "kind") if _field(req, n) is None]
        if lacking:
            raise _fail(plugin, decl, f"{where} must take a reference; {req.full_name} lacks {', '.join(lacking)}")
    elif op == "list":
        entries = _field(out, "entries")
        if entries is None or entries.message_type is not resource or _field(out, "next_page_token") is None:
            raise _fail(
                plugin, decl, f"{where} must return a list with 'entries' of {resource.full_name} and 'next_page_token'"
            )
        if _field(req, "page_size") is None or _field(req, "page_token") is None:
            raise _fail(plugin, decl, f"{where} request needs 'page_size' and 'page_token'")
    return wrapper


def _reference_kinds(decl: KindDeclaration, reference: Descriptor) -> frozenset[int] | None:
    """The enum values of a reference's ``kind`` that name this kind, or None for a string kind.

    A closed enum cannot name a third-party kind, so its values are matched
    to the kind's names once, here, ignoring case and underscores (``agent``
    names a kind whose resource message is ``Agent``).
    """
    enum = reference.fields_by_name["kind"].enum_type
    if enum is None:
        return None
    names = {decl.name, decl.plural, *decl.aliases, decl.resource.DESCRIPTOR.name}
    plain = {n.replace("_", "").replace("-", "").lower() for n in names if n}
    return frozenset(v.number for v in enum.values if v.name.replace("_", "").lower() in plain)


def _checked_steps(plugin: str, decl: KindDeclaration, where: str, steps: Iterable[object]) -> list[Step]:
    checked: list[Step] = []
    for candidate in steps:
        phase = getattr(candidate, "phase", None)
        if (
            not isinstance(phase, Phase)
            or not callable(candidate)
            or not isinstance(getattr(candidate, "name", None), str)
        ):
            name = getattr(candidate, "__name__", None)
            shown = f"function {name!r}" if inspect.isfunction(candidate) and isinstance(name, str) else repr(candidate)
            raise _fail(
                plugin,
                decl,
                f"{where}: {shown} is not a step (needs name, phase and __call__: decorate it with @step())",
            )
        called = candidate.fn if isinstance(candidate, FunctionStep) else candidate
        refused = call_refused(called, "step(ctx)", f"step {candidate.name!r}")  # type: ignore[attr-defined]
        if refused is not None:
            raise _fail(plugin, decl, f"{where}: {refused}")
        checked.append(candidate)  # type: ignore[arg-type]
    return checked


def access_of(operation: str, *, declared: Access | None = None, writes: bool = False) -> Access:
    """The access an rpc needs: as declared, else by its standard name, else by whether it writes."""
    if declared is not None:
        return declared
    if operation in WRITE_OPERATIONS:
        return Access.WRITE
    if operation in READ_OPERATIONS or operation in STANDARD_OPERATIONS:
        return Access.READ
    return Access.WRITE if writes else Access.READ


_LIST_READS = frozenset({"org", "page_size", "page_token", "labels"})
"""The fields of a ``list`` request its standard steps read."""


def _unread_list_fields(list_req: Descriptor, filters: Sequence[ListFilter], pipeline: Pipeline) -> tuple[str, ...]:
    """The list request's fields no standard step and no list filter reads, when its pipeline has
    no other step (one may read them: the kind's own, or another plugin's)."""
    if {*pipeline.pre, *pipeline.txn} - {*DEFAULT_PIPELINES["list"], standard.authorize}:
        return ()
    filtered = {f.field.path.split(".")[0] for f in filters}
    return tuple(f.name for f in list_req.fields if f.name not in _LIST_READS and f.name not in filtered)


def _warn_unapplied(plugin: str, decl: KindDeclaration, applied: Sequence[Step]) -> None:
    """Warn of a step before the transaction (a validation) a kind gives both create and update
    but not apply: apply inherits only their transactional steps, so such a check passes over
    whatever `stigmer apply` and import write, which is easy to miss."""
    first = [s for s in decl.steps.get("create", ()) if isinstance(s, Step) and not s.phase.in_transaction]
    both = [s for s in first if s in decl.steps.get("update", ()) and s not in applied]
    for missed in both:
        log.warning(
            "plugin %r: kind %r: step %r (phase %s) runs on create and update but not on apply, which runs "
            "only its own steps before the transaction: add it to steps['apply'] too, or apply and import "
            "write what it refuses",
            plugin, decl.name, missed.name, missed.phase.name,
        )  # fmt: skip


def _pipeline(
    pm: pluggy.PluginManager,
    plugin: str,
    decl: KindDeclaration,
    op: str,
    base: Sequence[Step],
    writes: bool,
    *,
    custom: bool = False,
    streaming: bool = False,
) -> Pipeline:
    declared = _checked_steps(plugin, decl, f"steps of {op!r}", decl.steps.get(op, ()))
    if standard.dispatch_apply in base and not custom:
        _warn_unapplied(plugin, decl, declared)
    if standard.dispatch_apply in base:
        # Its transaction runs create's or update's transactional steps and answers with their
        # result, so one of its own would run after the object is saved: its changes lost, yet
        # able to refuse a write already made.
        late = [s for s in declared if s.phase.in_transaction]
        if late:
            raise _fail(
                plugin, decl,
                f"steps of {op!r}: step {late[0].name!r} (phase {late[0].phase.name}) runs inside the transaction, "
                "which apply hands to create's or update's steps; declare it under steps['create'] and "
                "steps['update'] (steps of 'apply' may only be VALIDATE, AUTHORIZE or PREPARE)",
            )  # fmt: skip
    steps = list(base) + declared
    if standard.authorize not in steps:  # every rpc is authorized, whether or not its kind names the step
        steps.append(standard.authorize)
    if custom and standard.redact not in steps and not any(isinstance(s, standard.ListByStep) for s in steps):
        # and no custom rpc answers with a secret in clear: one whose steps left it out (a runner's
        # status report answering with the object) sent the kind's secrets. A listBy page is
        # blanked as it is assembled, as a list page is.
        steps.append(standard.redact)
    owners = [plugin] * len(steps)  # the plugin each step came from: who its fault is told of
    for adding, returned in hook_results(
        pm, "stigmer_pipeline_steps", {"kind": decl, "operation": op}, about=f"for kind {decl.name!r}, operation {op!r}"
    ):  # each named by the plugin that added it (``adding``), not the kind's
        extra = _checked_steps(
            adding, decl, f"stigmer_pipeline_steps for {op!r}", _added_steps(adding, decl, op, returned)
        )
        if op == "apply":  # its transaction runs create's or update's steps, which already have these
            extra = [s for s in extra if not s.phase.in_transaction]
        steps += extra
        owners += [adding] * len(extra)
    # stable: framework, then kind, then plugins within a phase; each step with the plugin it came from
    placed = sorted(zip(steps, owners, strict=True), key=lambda pair: pair[0].phase)
    steps = [s for s, _ in placed]
    owner_of = [o for _, o in placed]
    if decl.redact is not None and not _blanks_all(steps, streaming):
        # after every step, whatever its phase: one answering after redact (a kind's or a plugin's
        # RESPOND step, on a standard rpc too), or with a stream redact cannot see into, would
        # send the kind's secrets in clear
        steps.append(blank_sent(streaming))
        owner_of.append(plugin)
    pre = tuple(s for s in steps if not s.phase.in_transaction)
    txn = tuple(s for s in steps if s.phase.in_transaction)
    return Pipeline(
        pre=pre,
        txn=txn,
        writes=writes,
        pre_plugins=tuple(o for s, o in zip(steps, owner_of, strict=True) if not s.phase.in_transaction),
        txn_plugins=tuple(o for s, o in zip(steps, owner_of, strict=True) if s.phase.in_transaction),
    )


def _added_steps(plugin: str, decl: KindDeclaration, op: str, returned: object) -> list[object]:
    """What one ``stigmer_pipeline_steps`` returned, as a list of candidates for
    ``_checked_steps``: one step rather than a list of it, or something not a list at all,
    is that plugin's mistake, said as such rather than as a failure to compile the kind."""
    where = f"stigmer_pipeline_steps for {op!r} returned"
    expected = "it must return a list of steps (an empty list for none)"
    if isinstance(getattr(returned, "phase", None), Phase):
        shown = getattr(returned, "name", None)
        raise _fail(plugin, decl, f"{where} one step ({shown!r}), not a list; {expected}, such as [{shown}]")
    if isinstance(returned, (str, bytes, dict)) or not isinstance(returned, Iterable):
        raise _fail(plugin, decl, f"{where} a {type(returned).__name__}; {expected}")
    return listed(plugin, f"stigmer_pipeline_steps for kind {decl.name!r}, operation {op!r}", returned)


_KEEP_ANSWER = (standard.publish, standard.respond)
"""Standard steps that leave the answer as it was (``respond`` answers ``ctx.resource``, which
``redact`` blanked before it)."""

_BLANKING = (standard.list_page, standard.dispatch_apply, watch_events)
"""Standard steps whose answer is blanked as it is built: a list page as it is assembled, a
watch's events as they are sent, and apply's answer by the create or update pipeline it runs
(which ``blank_sent`` ends when it must)."""


def _blanks_all(steps: Sequence[Step], streaming: bool) -> bool:
    """Whether the (sorted) steps end with one that settles what is shown, followed only by steps
    that leave the answer alone. A unary answer is settled by ``redact`` or by any step of the
    ``REDACT`` phase after it: there a kind decides what is shown, and may show a secret on
    purpose (an ApiToken's value at create, a live run's context to its runner). A step of the
    ``RESPOND`` phase is not trusted to: what it answers is blanked after it. ``redact`` cannot see
    into a stream's messages, so a stream is settled only by a step that blanks as it sends."""
    for found in reversed(steps):
        if isinstance(found, BlanksAnswer) or found in _BLANKING:
            return True
        if found.phase is Phase.REDACT and not streaming:
            return True
        if found is standard.redact:
            continue  # a stream's: the messages are the stream's to blank
        if found not in _KEEP_ANSWER:
            return False
    return False


def _compiled(pm: pluggy.PluginManager, plugin: str, decl: KindDeclaration) -> KindRuntime:
    """``_compile``, with anything it did not foresee still naming the plugin and kind."""
    try:
        return _compile(pm, plugin, decl)
    except RegistryError:
        raise
    except BaseException as exc:  # a value of the wrong type somewhere in the declaration, or its code's exit
        raise _fail(plugin, decl, f"cannot be compiled: {raised(exc)}") from exc


def _check_types(plugin: str, decl: KindDeclaration) -> None:
    """The declaration's protobuf values are what the rest of the checks read; wrong ones are
    the easiest mistake to make (a descriptor for a class, a file for a service)."""
    resource = decl.resource
    if not (isinstance(resource, type) and issubclass(resource, Message)):
        given = (
            f"the descriptor of {resource.full_name}" if isinstance(resource, Descriptor) else type(resource).__name__
        )
        raise _fail(
            plugin, decl, f"resource must be the generated message class (such as prompt_pb2.Prompt), not {given}"
        )
    for label in ("command_service", "query_service"):
        service = getattr(decl, label)
        if not isinstance(service, ServiceDescriptor):
            raise _fail(
                plugin, decl,
                f"{label} must be a ServiceDescriptor (such as service_pb2.DESCRIPTOR.services_by_name[...]), "
                f"not {type(service).__name__}",
            )  # fmt: skip


_CALLS = {
    "redact": "redact(obj)",
    "redacts": "redacts(obj)",
    "export_fill": "export_fill(obj, call)",
    "export_history": "export_history(obj, call)",
    "import_history": "import_history(obj, history, call)",
    "delete_guard": "delete_guard(store, obj, inside)",
}
"""How the framework calls each function a declaration may give (every argument positional)."""


def _check_calls(plugin: str, decl: KindDeclaration) -> None:
    """Each declared function takes the arguments it will be given: one that cannot failed each
    call with INTERNAL (every delete, for a ``delete_guard``), long after startup."""
    given: list[tuple[str, object, str]] = [
        (field, getattr(decl, field), call) for field, call in _CALLS.items() if getattr(decl, field) is not None
    ]
    given += [(f"the values of index {index.name!r}", index.values, "values(obj)") for index in decl.indexes]
    given += [
        (f"the live of reference {r.field!r}", r.live, "live(referrer)") for r in decl.references if r.live is not None
    ]
    for named, function, call in given:
        refused = call_refused(function, call, named)
        if refused is not None:
            raise _fail(plugin, decl, refused)


_INTEGERS = frozenset(
    getattr(FieldDescriptor, f"TYPE_{name}")
    for name in ("INT32", "INT64", "UINT32", "UINT64", "SINT32", "SINT64", "FIXED32", "FIXED64", "SFIXED32", "SFIXED64")
)
_COLUMN_FIELDS: dict[str, tuple[str, Any]] = {
    "string": ("any field but a map", lambda field: True),
    "integer": (
        "an integer field (int32, int64, uint32, uint64, sint, fixed or sfixed)",
        lambda f: f.type in _INTEGERS,
    ),
    "number": (
        "a number field (float, double or an integer)",
        lambda f: f.type in _INTEGERS or f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE),
    ),
    "boolean": ("a bool field", lambda f: f.type == FieldDescriptor.TYPE_BOOL),
    "date": (
        "a singular google.protobuf.Timestamp field (shown as an age)",
        lambda f: getattr(f.message_type, "full_name", None) == "google.protobuf.Timestamp" and not _is_repeated(f),
    ),
}
"""What each printer column type can show: ``stigmer get`` reads the field as its type says, and
one it cannot read (a string as a date) stopped the command with a traceback."""


def _check_column(plugin: str, decl: KindDeclaration, column: PrinterColumn) -> None:
    where = f"printer column {column.name!r}"
    desc: Any = decl.resource.DESCRIPTOR
    field: Any = None
    for part in column.path.split("."):
        if field is not None and _is_repeated(field):  # a list has no fields to read on
            raise _fail(plugin, decl, f"{where}: {column.path!r} reads into {field.name!r}, which is {_type_of(field)}")
        if desc is None or part not in desc.fields_by_name:
            raise _fail(plugin, decl, f"{where}: no field {column.path!r} in the resource")
        field = desc.fields_by_name[part]
        desc = field.message_type
    needs, shows = _COLUMN_FIELDS[column.type]
    if _is_map(field) or not shows(field):
        raise _fail(
            plugin, decl,
            f"{where}: {column.path!r} is {_type_of(field)}; a column of type {column.type!r} needs {needs}"
            + ("" if column.type == "string" else " ('string' shows any field but a map)"),
        )  # fmt: skip


def _compile(pm: pluggy.PluginManager, plugin: str, decl: KindDeclaration) -> KindRuntime:
    _check_types(plugin, decl)
    _check_calls(plugin, decl)
    try:
        shape = ResourceShape.of(decl.name, decl.resource.DESCRIPTOR)
    except RegistryError as exc:  # it knows the kind, not the plugin
        raise RegistryError(f"plugin {plugin!r}: {exc}") from None
    for op in decl.steps:
        if op not in STANDARD_OPERATIONS and op not in decl.operations and op != "watch":
            known = sorted({*STANDARD_OPERATIONS, *decl.operations, "watch"})
            close = difflib.get_close_matches(op, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _fail(
                plugin, decl, f"steps declared for unknown operation {op!r} ({hint}operations: {', '.join(known)})"
            )
    methods = [m for svc in (decl.command_service, decl.query_service) for m in svc.methods]
    names = {m.name for m in methods}
    for op in decl.operations:
        if op not in names:
            raise _fail(plugin, decl, f"operation {op!r} binds no rpc method of its services")
    list_method = next((m for m in methods if m.name == "list" and m.name not in decl.operations), None)
    list_req = list_method.input_type if list_method else None
    indexes: dict[str, IndexSpec] = {}
    for index in decl.indexes:
        if index.name == LABEL_INDEX:
            raise _fail(plugin, decl, f"index name {LABEL_INDEX!r} is reserved (labels are always indexed under it)")
        if index.name in indexes:
            raise _fail(plugin, decl, f"index {index.name!r} is declared twice")
        indexes[index.name] = index
    references = []
    for ref in decl.references:
        found = _resolve_field(plugin, decl, decl.resource.DESCRIPTOR, ref.field, "reference field")
        if found.enum_names is not None:  # an id is a string: an enum's value names no object
            raise _fail(
                plugin, decl, f"reference field {ref.field!r} is an enum; a reference holds ids, in a string field"
            )
        references.append(CompiledReference(ref, found))
    for helper in {getattr(decl.redact, "__self__", None), getattr(decl.redacts, "__self__", None)}:
        if isinstance(helper, SecretFields):
            problem = helper.problem(decl.resource.DESCRIPTOR)
            if problem is not None:
                raise _fail(plugin, decl, problem)
    for column in decl.printer_columns:
        _check_column(plugin, decl, column)
    for path in decl.mutable:
        if not _resolves(decl.resource.DESCRIPTOR, path):
            raise _fail(plugin, decl, f"mutable path {path!r}: no such field in the resource")
    filters = []
    for field_name, index_name in decl.list_filters.items():
        if index_name not in indexes:
            raise _fail(plugin, decl, f"list filter {field_name!r} names unknown index {index_name!r}")
        if list_req is None:
            raise _fail(plugin, decl, f"list filter {field_name!r}: the kind has no standard 'list' rpc to filter")
        try:
            filters.append(ListFilter(FieldPath.resolve(list_req, field_name), indexes[index_name]))
        except KeyError:
            raise _fail(
                plugin, decl, f"list filter field {field_name!r} does not exist: {_missing(list_req, field_name)}"
            ) from None
        except TypeError as exc:
            raise _fail(plugin, decl, f"list filter field {field_name!r}: {exc}") from None
    runtime = KindRuntime(
        decl=decl,
        plugin=plugin,
        shape=shape,
        list_shape=ListShape(
            has_org=list_req is not None and _field(list_req, "org") is not None,
            has_labels=list_req is not None and _field(list_req, "labels") is not None,
        ),
        list_cls=message_factory.GetMessageClass(list_method.output_type) if list_method else decl.resource,
        references=tuple(references),
        list_filters=tuple(filters),
    )
    if list_method is not None:
        runtime.entries_tag = keys.varint(list_method.output_type.fields_by_name["entries"].number << 3 | 2)
    for op in STANDARD_OPERATIONS:
        runtime.pipelines[op] = _pipeline(pm, plugin, decl, op, DEFAULT_PIPELINES[op], op in WRITE_OPERATIONS)
    runtime.watch = _pipeline(pm, plugin, decl, "watch", WATCH_PIPELINE, False, streaming=True)
    if list_req is not None:
        runtime.unread_list_fields = _unread_list_fields(list_req, filters, runtime.pipelines["list"])
    access: dict[str, Access] = {}
    for op in decl.access:
        if op not in STANDARD_OPERATIONS and op != WATCH_ACCESS:
            raise _fail(
                plugin, decl, f"access declared for {op!r}, which is neither a standard operation nor {WATCH_ACCESS!r}"
            )
    for op in STANDARD_OPERATIONS:
        access[op] = access_of(op, declared=decl.access.get(op))
    # A watch shows every object of the kind, as a list does, and keeps showing them.
    runtime.watch_access = decl.access.get(WATCH_ACCESS, access["list"])
    runtime.read_access = access["get"]
    runtime.delete_access = access["delete"]
    streams = {method.name for method in methods if method.server_streaming}
    for op, custom in decl.operations.items():
        base = _checked_steps(plugin, decl, f"operation {op!r}", custom.steps)
        runtime.pipelines[op] = _pipeline(
            pm, plugin, decl, op, base, custom.writes, custom=True, streaming=op in streams
        )
        access[op] = access_of(op, declared=custom.access, writes=custom.writes)
    for method in methods:
        if method.name in decl.operations:
            pass
        elif method.name in STANDARD_OPERATIONS:
            wrapper = _check_method(plugin, decl, method)
            if wrapper is not None:
                runtime.resource_field = wrapper
            if method.name == "getByReference":
                runtime.reference_kinds = _reference_kinds(decl, method.input_type)
        else:
            raise _fail(
                plugin, decl,
                f"rpc {method.full_name} is bound by no operation: name it in the declaration's 'operations'",
            )  # fmt: skip
        if method.client_streaming:
            raise _fail(plugin, decl, f"rpc {method.full_name}: client streaming is not supported")
        _check_list_by(plugin, decl, method, runtime, indexes)
        path = f"/{method.containing_service.full_name}/{method.name}"
        runtime.methods[path] = MethodBinding(
            path=path,
            operation=method.name,
            pipeline=runtime.pipelines[method.name],
            request_cls=message_factory.GetMessageClass(method.input_type),
            response_cls=message_factory.GetMessageClass(method.output_type),
            server_streaming=method.server_streaming,
            access=access[method.name],
        )
    return runtime


def _check_list_by(
    plugin: str, decl: KindDeclaration, method: MethodDescriptor, runtime: KindRuntime, indexes: dict[str, IndexSpec]
) -> None:
    """What a ``standard.list_by`` step of an rpc reads must be there: its index, its request
    fields (strings or enums), paging fields, and the kind's list message to answer with."""
    pipeline = runtime.pipelines[method.name]
    request = method.input_type
    for found in (*pipeline.pre, *pipeline.txn):
        if not isinstance(found, standard.ListByStep):
            continue
        where = f"rpc {method.full_name}: list_by({', '.join(map(repr, (found.index, *found.fields)))})"
        if found.index not in indexes:
            declared = ", ".join(map(repr, indexes)) or "none"
            raise _fail(plugin, decl, f"{where} names unknown index {found.index!r} (declared: {declared})")
        for name in found.fields:
            _resolve_field(plugin, decl, request, name, f"{where}: request field")
        lacking = [n for n in ("page_size", "page_token") if _field(request, n) is None]
        if lacking:
            raise _fail(plugin, decl, f"{where}: {request.full_name} lacks {' and '.join(map(repr, lacking))}")
        if method.output_type is not runtime.list_cls.DESCRIPTOR or runtime.list_cls is decl.resource:
            raise _fail(
                plugin, decl,
                f"{where}: the rpc must return the kind's list message (what its 'list' rpc returns), "
                f"not {method.output_type.full_name}",
            )  # fmt: skip
