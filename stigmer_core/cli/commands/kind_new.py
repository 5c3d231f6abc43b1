"""``stigmer kind new NAME``: a kind package that installs and passes its own tests as written.

The package follows docs/plugins.md: the resource and its services in
``proto/`` (the published envelope and field numbers, protovalidate rules),
the generated code (through ``python -m stigmer_core.protogen`` when
grpcio-tools is installed), a plugin module registered under the
``stigmer.kinds`` entry point, the contract suite on both paths and a README.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from pathlib import Path
from shlex import quote
from string import Template

import click

from stigmer_core.cli.errors import CliError
from stigmer_core.cli.options import verbose_option

_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")
"""The registry's rule for a kind name (an ASCII letter, then letters and digits, 63 at most), less
a lowercase first letter: the name is also the generated proto messages' and Python classes' name,
where a lowercase one could be a proto scalar type (``string``) or a Python keyword (``class``)."""
_NAME_RULE = (
    "an uppercase ASCII letter followed by ASCII letters and digits, 63 characters at most (CamelCase, like McpServer)"
)
_RESERVED = frozenset({"DESCRIPTOR"})
"""Names every generated ``_pb2`` module already holds: a message so named would replace the module's own."""
_MAX_PLURAL = 63
_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,30}")
_PREFIX_RULE = "a lowercase ASCII letter followed by lowercase letters, digits and dashes, 31 characters at most"
_CAMEL_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_CAMEL_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _words(name: str) -> list[str]:
    """The name's words, lowercase: digits stay with the word they follow (``S3Bucket``: s3, bucket)
    and a run of capitals is one word (``HTTPServer``: http, server). Splitting only between
    characters keeps every one of them, so two names differing in a digit never make one package."""
    return _CAMEL_WORD.sub("_", _CAMEL_ACRONYM.sub("_", name)).lower().split("_")


PYPROJECT = Template("""[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name kind for Stigmer Core."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["stigmer-core>=0.1"]

[project.optional-dependencies]
test = ["stigmer-core[test]"]
# protogen: regenerate $package/api from proto/ (python -m stigmer_core.protogen)
dev = ["stigmer-core[test,protogen]"]

# How Stigmer Core finds the kind.
[project.entry-points."stigmer.kinds"]
$dist = "$package.plugin"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.setuptools.package-data]
"*" = ["*.pyi", "py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
""")

RESOURCE_PROTO = Template("""// The $name resource: the envelope every Stigmer kind shares, with the published API's field numbers.
syntax = "proto3";

package $proto_package;

import "buf/validate/validate.proto";
import "stigmer_core/api/commons/apiresource/v1/metadata.proto";

message $name {
  string api_version = 1 [(buf.validate.field).string.max_len = 63];
  string kind = 2 [(buf.validate.field).string.max_len = 63];
  stigmer.commons.apiresource.v1.ApiResourceMetadata metadata = 3 [(buf.validate.field).required = true];
  ${name}Spec spec = 4;
  ${name}Status status = 5;
}

// What users write. Declare every rule a random spec could break here, where
// the validate step and the testing kit's strategies both read it.
message ${name}Spec {
  string description = 1 [(buf.validate.field).string.max_len = 1024];
}

// What the server says about it; cleared on create, kept by updates.
message ${name}Status {
  string phase = 1;
}

message ${name}Id {
  string value = 1 [(buf.validate.field).string = {min_len: 1, max_len: 64}];
}

message List${plural}Request {
  // Empty lists every org.
  string org = 1 [(buf.validate.field).string = {
    max_len: 63
    pattern: "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$$"
  }];
  int32 page_size = 2 [(buf.validate.field).int32 = {gte: 0, lte: 1000}];
  string page_token = 3 [(buf.validate.field).string.max_len = 1024];
  // Every label given must match.
  map<string, string> labels = 4 [(buf.validate.field).map.max_pairs = 16];
}

message ${name}List {
  repeated $name entries = 1;
  string next_page_token = 2;
}
""")

SERVICE_PROTO = Template("""syntax = "proto3";

package $proto_package;

import "$proto_dir/$snake.proto";
import "stigmer_core/api/commons/apiresource/v1/metadata.proto";

service ${name}CommandController {
  rpc create($name) returns ($name);
  rpc apply($name) returns ($name);
  rpc update($name) returns ($name);
  rpc delete(${name}Id) returns ($name);
}

service ${name}QueryController {
  rpc get(${name}Id) returns ($name);
  rpc getByReference(stigmer.commons.apiresource.v1.ApiResourceReference) returns ($name);
  rpc list(List${plural}Request) returns (${name}List);
}
""")

INIT = Template('''"""The $name kind for Stigmer Core: declared in ``$package.plugin``, generated code in ``$package.api``."""
''')

PLUGIN = Template('''"""The $name kind, declared: the whole of what Stigmer Core needs to serve it.

Registered in pyproject.toml under the ``stigmer.kinds`` entry-point group.
Add steps per operation (``steps={"create": (...)}``), custom rpcs
(``operations``), indexes and references here; see docs/plugins.md.
"""

from __future__ import annotations

from stigmer_core import KindDeclaration, PrinterColumn, hookimpl

from $package.api.v1 import ${snake}_pb2, ${snake}_service_pb2

_services = ${snake}_service_pb2.DESCRIPTOR.services_by_name

$constant = KindDeclaration(
    name="$name",
    resource=${snake}_pb2.$name,
    command_service=_services["${name}CommandController"],
    query_service=_services["${name}QueryController"],
    id_prefix="$id_prefix",
    key_prefix="$key_prefix",
    # the apiVersion its objects and documents carry; to change it later, name this one in
    # former_api_versions, so objects written before and their backups are still read
    api_version="$package/v1",
    plural="$plural_lower",
    printer_columns=(PrinterColumn("phase", "status.phase"),),
    description="$name resources.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [$constant]
''')

CONTRACT_TEST = Template('''"""The stateful contract every kind keeps, for $name, in-process and over a real server.

STIGMER_CONTRACT_PROFILE=thorough runs longer sequences.
"""

from stigmer_core.testing import contract_tests

Test${name}InProcess, Test${name}Network = contract_tests("$name")
''')

ROUND_TRIP_TEST = Template('''"""$name through its generated stubs, on both paths (the ``stigmer_channel`` fixture)."""

from __future__ import annotations

import grpc

from $package.api.v1 import ${snake}_pb2, ${snake}_service_pb2_grpc


def test_create_then_get(stigmer_channel: grpc.Channel) -> None:
    commands = ${snake}_service_pb2_grpc.${name}CommandControllerStub(stigmer_channel)
    queries = ${snake}_service_pb2_grpc.${name}QueryControllerStub(stigmer_channel)
    sent = ${snake}_pb2.$name(spec=${snake}_pb2.${name}Spec(description="the first one"))
    sent.metadata.name = "First One"
    created = commands.create(sent, timeout=10)
    assert created.metadata.id.startswith("$id_prefix-")
    assert created.metadata.slug == "first-one"
    assert queries.get(${snake}_pb2.${name}Id(value=created.metadata.id), timeout=10) == created
''')

README = Template("""# $dist

The `$name` resource kind for Stigmer Core, made by
`stigmer kind new $name`.

| path | what |
|---|---|
| `proto/$proto_dir/` | the resource (`$snake.proto`) and its services (`${snake}_service.proto`), package `$proto_package` |
| `$package/api/` | generated code: `python -m stigmer_core.protogen` rewrites it from `proto/` |
| `$package/plugin.py` | the kind's declaration, registered under the `stigmer.kinds` entry point |
| `tests/` | the contract suite on both paths, and a round trip through the stubs |

stigmer-core is not on PyPI: install it from a checkout of Stigmer Core (the directory
holding its `pyproject.toml`), in the same pip command as this package, so pip takes it from
there and keeps the versions the `protogen` extra pins:

```sh
python -m venv .venv && .venv/bin/pip install -e "/path/to/stigmer-core[test,protogen]" -e ".[dev]"
.venv/bin/python -m stigmer_core.protogen --check   # generated code matches proto/
.venv/bin/pytest
.venv/bin/stigmer serve                             # serves $name beside the installed kinds
```

Change the spec in `proto/$proto_dir/$snake.proto`, regenerate with
`python -m stigmer_core.protogen`, and keep every rule a client can break in the proto.
""")


def _plural_ending(name: str) -> tuple[int, str]:
    """How the plural ends: the characters it drops from the name's end and what it adds. The
    CamelCase plural (``ListPoliciesRequest``) and the key prefix (``policies``) both take it, so
    they agree; an all-capitals word (``HTTPS``) just takes an ``s``."""
    if re.search(r"[b-df-hj-np-tv-z]y$", name):
        return 1, "ies"
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return 0, "es"
    return 0, "s"


def _plural(name: str) -> str:
    drop, add = _plural_ending(name)
    return name[: len(name) - drop] + add


def _kebab_plural(name: str) -> str:
    """The plural in kebab case (``S3Policy``: ``s3-policies``): the default key prefix."""
    kebab = "-".join(_words(name))
    drop, add = _plural_ending(name)  # the dropped letters are lowercase, so the kebab ends with them too
    return kebab[: len(kebab) - drop] + add


def scaffold(name: str, target: Path, *, package: str, id_prefix: str, key_prefix: str) -> list[Path]:
    """Write the package for kind ``name`` into ``target`` (which must not exist or be empty)."""
    words = _words(name)
    snake = "_".join(words)
    plural = _plural(name)
    values = {
        "name": name,
        "snake": snake,
        "plural": plural,
        "plural_lower": plural.lower(),
        "constant": snake.upper(),
        "package": package,
        "dist": "stigmer-kind-" + "-".join(words),
        "proto_package": f"{package}.v1",
        "proto_dir": f"{package}/api/v1",
        "id_prefix": id_prefix,
        "key_prefix": key_prefix,
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"proto/{package}/api/v1/{snake}.proto": RESOURCE_PROTO,
        # the services' file is named after the resource's, so the two never collide (kind Service)
        f"proto/{package}/api/v1/{snake}_service.proto": SERVICE_PROTO,
        f"{package}/__init__.py": INIT,
        f"{package}/py.typed": Template(""),
        f"{package}/plugin.py": PLUGIN,
        f"tests/test_{snake}_contract.py": CONTRACT_TEST,
        f"tests/test_{snake}.py": ROUND_TRIP_TEST,
    }
    written = []
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values))
        written.append(path)
    return written


def _defaults(name: str) -> tuple[str, str, str]:
    words = _words(name)
    package = "_".join(words) + "_kind"
    id_prefix = "".join(words)[:4]
    return package, id_prefix, _kebab_plural(name)


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a kind this command writes: said before anything is written, since
    a name the generated code cannot hold failed only in protoc or in Python's parser."""
    if not _NAME.fullmatch(name):
        return f"kind name {name!r} must be {_NAME_RULE}"
    if keyword.iskeyword(name):  # None, True, False: a class of that name is a SyntaxError
        return (
            f"kind name {name!r} is a Python keyword: the generated classes are named after the kind, "
            "and Python cannot name a class so; choose another name"
        )
    if name in _RESERVED:
        return f"kind name {name!r} is what every generated _pb2 module names its file descriptor; choose another name"
    plural = _plural(name)
    if len(plural) > _MAX_PLURAL:  # the registry holds a plural, one word on the command line, to a name's length
        return f"kind name {name!r} is too long: its plural {plural!r} must be {_MAX_PLURAL} characters at most"
    return None


@click.group()
def kind() -> None:
    """Write new kinds."""


@kind.command("new")
@click.argument("name")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path), help="Where to write (default ./stigmer-kind-NAME)."
)
@click.option("--package", help="Python package name (default NAME_kind, snake case).")
@click.option("--id-prefix", help="Id prefix (default: the first four letters and digits of NAME).")
@click.option("--key-prefix", help="Store key prefix (default: NAME in kebab case, plural).")
@click.option("--generate/--no-generate", default=True, help="Run protogen (needs stigmer-core[protogen]).")
@verbose_option
def new(
    name: str,
    directory: Path | None,
    package: str | None,
    id_prefix: str | None,
    key_prefix: str | None,
    generate: bool,
) -> None:
    """Write a kind package for NAME (CamelCase, like McpServer) that installs and passes its tests.

    The ids and key prefix are checked against the kinds installed here.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise CliError(problem, exit_code=2)
    default_package, default_id, default_key = _defaults(name)
    package = package or default_package
    if not package.isidentifier() or package != package.lower() or keyword.iskeyword(package):
        raise CliError(f"package {package!r} must be a lowercase Python identifier (not a keyword)", exit_code=2)
    if importlib.util.find_spec(package) is not None:  # the new package would hide it, or it the new one
        raise CliError(f"a package named {package!r} is already importable here; choose another with --package")
    prefixes = (
        ("id prefix", id_prefix, default_id, "--id-prefix"),
        ("key prefix", key_prefix, default_key, "--key-prefix"),
    )
    for label, given, default, option in prefixes:
        if not _PREFIX.fullmatch(given or default):
            made = "" if given else f" (made from the name); choose one with {option}"
            raise CliError(f"{label} {given or default!r} must be {_PREFIX_RULE}{made}", exit_code=2)
    id_prefix = id_prefix or default_id
    key_prefix = key_prefix or default_key
    _check_free(name, id_prefix, key_prefix)
    target = directory or Path("stigmer-kind-" + "-".join(_words(name)))
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} exists and is not empty")
    written = scaffold(name, target, package=package, id_prefix=id_prefix, key_prefix=key_prefix)
    click.echo(f"wrote {len(written)} files for kind {name} in {target}")
    if generate:
        try:
            from stigmer_core import protogen

            generated = protogen.generate(target / "proto", target, with_validate=False)
        except SystemExit as exc:  # no grpcio-tools: the next steps start with generating
            click.echo(f"not generated: {exc}", err=True)
            generate = False
        else:
            click.echo(f"generated {len(generated)} files from {target / 'proto'}")
    click.echo(_next_steps(target, generated=generate))


def _next_steps(target: Path, *, generated: bool) -> str:
    """The commands that finish the package, in order: generated code first (the tests import it).

    Each names the interpreter running this command: the README's setup runs .venv/bin/stigmer
    without activating the venv, where a bare pip is the system's, which cannot find stigmer-core.
    """
    python = quote(sys.executable)
    steps = [
        f"{python} -m pip install -e {quote(f'{target}[test]')}",
        f"{python} -m pytest {quote(str(target / 'tests'))}",
    ]
    if not generated:
        proto = quote(str(target / "proto"))
        steps.insert(0, f"{python} -m stigmer_core.protogen --proto-path {proto} --out {quote(str(target))}")
    return "next: " + " && ".join(steps)


def _check_free(name: str, id_prefix: str, key_prefix: str) -> None:
    """Refuse names and prefixes an installed kind holds (the daemon would refuse to start)."""
    from stigmer_core.kinds.registry import build_registry, cli_names, names_overlap
    from stigmer_core.plugins import plugin_manager

    words = cli_names(name, _plural(name).lower())
    for kind in build_registry(plugin_manager()).kinds:
        if kind.name.lower() == name.lower():
            raise CliError(f"kind {name} is already installed (plugin {kind.plugin!r})")
        theirs = cli_names(kind.name, kind.decl.plural, kind.decl.aliases)
        word = names_overlap(words, theirs)
        if word is not None:  # every command would then fail: the registry refuses overlapping names
            raise CliError(
                f"kind name {name}: {word!r} would be {words[word]} of the new kind and is {theirs[word]} "
                f"of kind {kind.name} (plugin {kind.plugin!r}); the CLI could not tell which kind it names, "
                "so choose another name"
            )
        if kind.id_prefix == id_prefix:
            raise CliError(f"id prefix {id_prefix!r} is used by kind {kind.name}; choose another with --id-prefix")
        if kind.key_prefix.startswith(key_prefix) or key_prefix.startswith(kind.key_prefix):
            raise CliError(
                f"key prefix {key_prefix!r} overlaps kind {kind.name}'s {kind.key_prefix!r}; choose another with --key-prefix"
            )
