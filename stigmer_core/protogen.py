"""Generate Python code from Stigmer .proto files, reproducibly.

    python -m stigmer_core.protogen [--proto-path DIR] [--out DIR] [--check]

protovalidate ships no ``validate.proto``; its wheel carries the schema's
descriptor, which is handed to protoc as a descriptor set so that protos may
import ``buf/validate/validate.proto``. The generated ``validate_pb2`` lives
in ``stigmer_core.api.buf.validate`` rather than a top-level ``buf`` package,
so installing this project never overwrites another distribution's copy.

Third-party kind packages run the same command on their own ``proto/`` tree:
the descriptors of ``stigmer_core.api`` (the shared envelope messages) are
added to the set, so ``import "stigmer_core/api/commons/..."`` resolves with
no copy of our sources. ``--check`` regenerates into a temporary directory
and fails when the checked-in output differs (CI runs it).
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib
import importlib.util
import pkgutil
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

VALIDATE_PROTO = "buf/validate/validate.proto"
_BUF_IMPORT = re.compile(r"^from buf\.validate import ", re.MULTILINE)
_BUF_TARGET = "from stigmer_core.api.buf.validate import "
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
MYPY_GRPC_PLUGIN = "protoc-gen-mypy_grpc"
"""mypy-protobuf's protoc plugin: the stubs' types (``_pb2_grpc.pyi``), which grpcio-tools does not write."""


def _validate_descriptor() -> bytes:
    # Private to protovalidate; its version is pinned in pyproject.toml and
    # --check in CI notices when the schema moves.
    from protovalidate._gen.buf.validate import validate_pb

    return bytes(validate_pb._DESC.proto.to_binary())


def _core_descriptors(local_files: set[str]) -> list[bytes]:
    """Serialized descriptors of the installed stigmer_core.api protos."""
    try:
        api = importlib.import_module("stigmer_core.api")
    except ImportError:
        return []
    found: dict[str, bytes] = {}
    for info in pkgutil.walk_packages(api.__path__, "stigmer_core.api."):
        if not info.name.endswith("_pb2") or ".buf." in info.name:
            continue
        module = importlib.import_module(info.name)
        desc = module.DESCRIPTOR
        if desc.name not in local_files:
            found[desc.name] = desc.serialized_pb
    return [found[name] for name in sorted(found)]


def _descriptor_set(local_files: set[str]) -> bytes:
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    fds.file.add().ParseFromString(_validate_descriptor())
    for raw in _core_descriptors(local_files):
        fds.file.add().ParseFromString(raw)
    return fds.SerializeToString()


GRPCIO_TOOLS = "1.78.2"
"""The generator the checked-in code comes from: its output loads on protobuf 6.32+ and 7."""
INSTALL_HINT = (
    "install the generator with stigmer-core's `protogen` extra, in the same pip command as anything "
    "else you install: pip install 'stigmer-core[test,protogen]' (it pins grpcio-tools "
    f"{GRPCIO_TOOLS} and mypy-protobuf, and lets pip choose grpcio packages and a protobuf that all agree with it)"
)


def _mypy_grpc_plugin(where: Path) -> str:
    """The plugin as a script in ``where`` running mypy-protobuf under this interpreter: its own
    script is in the bin of whichever environment installed it, which need be neither this
    interpreter's nor on PATH (a venv layered over another's packages)."""
    if importlib.util.find_spec("mypy_protobuf") is None:
        raise SystemExit(f"python -m stigmer_core.protogen needs mypy-protobuf: {INSTALL_HINT}")
    script = where / MYPY_GRPC_PLUGIN
    script.write_text(f"#!{sys.executable}\nfrom mypy_protobuf.main import grpc\n\nraise SystemExit(grpc())\n")
    script.chmod(0o700)
    return str(script)


def _protoc_module() -> Any:
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(f"python -m stigmer_core.protogen needs grpcio-tools: {INSTALL_HINT}") from None
    return protoc


def _protoc(args: list[str]) -> None:
    protoc = _protoc_module()
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{include}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


_STRIPPED_NOTE = (
    "# Servicer base classes and add_*Servicer_to_server removed by stigmer_core.protogen:\n"
    "# the controller factory serves every method from the kind's declaration; use the stubs.\n"
)


def _strip_servicers(text: str, *, note: bool = True) -> str:
    """Drop the servicer half of a ``_pb2_grpc.py`` (or its ``.pyi``: ``note`` False, since its first
    line opens a docstring), keeping the client stubs.

    Nothing here implements a service by subclassing (the generic controller
    factory builds every handler), and unimplemented servicer bases would
    only invite per-kind handler code.
    """
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    cut: list[tuple[int, int]] = []
    for node in tree.body:
        servicer = isinstance(node, ast.ClassDef) and node.name.endswith(("Servicer", "_ServicerContext"))
        registrar = (
            isinstance(node, ast.FunctionDef)
            and node.name.startswith("add_")
            and node.name.endswith("Servicer_to_server")
        )
        if servicer or registrar:
            start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            cut.append((start - 1, node.end_lineno or node.lineno))
    if not cut:
        return text
    for start, end in sorted(cut, reverse=True):
        del lines[start:end]
    body = "".join(lines)
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    if not note:
        return body
    header, _, rest = body.partition("\n")
    return f"{header}\n{_STRIPPED_NOTE}{rest}"


def _generated(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(_GENERATED_SUFFIXES))


def _compile(proto_path: Path, gen: Path, *, with_validate: bool) -> list[Path]:
    """Compile every .proto under ``proto_path`` into the empty dir ``gen``."""
    sources = sorted(p.relative_to(proto_path).as_posix() for p in proto_path.rglob("*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files under {proto_path}")
    set_path = gen.parent / "deps.binpb"
    set_path.write_bytes(_descriptor_set(set(sources)))
    common = [f"--descriptor_set_in={set_path}", f"-I{proto_path}"]
    _protoc_module()  # the generator first: without the extra, it is what is said missing
    typed = [
        f"--plugin={MYPY_GRPC_PLUGIN}={_mypy_grpc_plugin(gen.parent)}",
        "--mypy_grpc_opt=quiet",
        f"--mypy_grpc_out={gen}",
    ]
    _protoc([*common, f"--python_out={gen}", f"--pyi_out={gen}", f"--grpc_python_out={gen}", *typed, *sources])
    if with_validate:
        side = gen.parent / "validate"
        side.mkdir()
        _protoc([f"--descriptor_set_in={set_path}", f"--python_out={side}", f"--pyi_out={side}", VALIDATE_PROTO])
        target = gen / "stigmer_core" / "api" / "buf" / "validate"
        target.mkdir(parents=True)
        for name in ("validate_pb2.py", "validate_pb2.pyi"):
            shutil.copyfile(side / "buf" / "validate" / name, target / name)
    written = _generated(gen)
    for path in written:
        text = path.read_text()
        fixed = _BUF_IMPORT.sub(_BUF_TARGET, text)
        try:
            if path.name.endswith("_pb2_grpc.py"):
                fixed = _strip_servicers(fixed)
            elif path.name.endswith("_pb2_grpc.pyi"):
                fixed = _strip_servicers(fixed, note=False)
        except SyntaxError as exc:  # else an "unexpected error" naming neither the file nor the cause
            raise SystemExit(
                f"protoc wrote {path.relative_to(gen)}, which is not Python ({exc.msg}, line {exc.lineno}: "
                f"{(exc.text or '').strip()}): a message or service named like a Python keyword (None, True, "
                "False) cannot be a Python class; rename it in the .proto"
            ) from None
        if fixed != text:
            path.write_text(fixed)
    for path in written:
        # Generated packages are regular packages so tools and setuptools see them.
        walk = path.parent
        while walk != gen:
            (walk / "__init__.py").touch()
            walk = walk.parent
    return written


def generate(proto_path: Path, out: Path, *, with_validate: bool) -> list[Path]:
    """Compile into a scratch dir, then copy exactly what protoc produced to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "gen"
        gen.mkdir()
        produced = _compile(proto_path, gen, with_validate=with_validate)
        copied: list[Path] = []
        for path in sorted(gen.rglob("*")):
            if path.is_file():
                dest = out / path.relative_to(gen)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists() or path.name != "__init__.py":
                    shutil.copyfile(path, dest)
        copied = [out / p.relative_to(gen) for p in produced]
    return copied


def _diff(expected: Path, actual: Path, shown: Path) -> list[str]:
    """What differs between the fresh output ``expected`` and the checked-in ``actual``, each path
    under ``shown`` (``actual`` as the user named it), so that it is one they can open."""
    problems: list[str] = []
    want = {p.relative_to(expected) for p in _generated(expected)}
    have = {p.relative_to(actual) for p in _generated(actual)}
    problems += [f"missing: {shown / p}" for p in sorted(want - have)]
    problems += [f"not generated by the protos: {shown / p}" for p in sorted(have - want)]
    for rel in sorted(want & have):
        if not filecmp.cmp(expected / rel, actual / rel, shallow=False):
            problems.append(f"differs: {shown / rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stigmer_core.protogen", description=__doc__.split("\n")[0])
    parser.add_argument("--proto-path", type=Path, default=Path("proto"), help="root of the .proto tree")
    parser.add_argument("--out", type=Path, default=Path("."), help="where generated packages are written")
    parser.add_argument("--check", action="store_true", help="fail if checked-in code differs")
    parser.add_argument(
        "--with-validate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write stigmer_core/api/buf/validate (default: when generating stigmer_core itself)",
    )
    args = parser.parse_args(argv)
    proto_path: Path = args.proto_path.resolve()
    with_validate = args.with_validate
    if with_validate is None:
        with_validate = (proto_path / "stigmer_core").is_dir()
    if not args.check:
        written = generate(proto_path, args.out.resolve(), with_validate=with_validate)
        print(f"generated {len(written)} files from {proto_path}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "gen"
        gen.mkdir()
        _compile(proto_path, gen, with_validate=with_validate)
        roots = {p.relative_to(gen).parts[0] for p in _generated(gen)}
        problems: list[str] = []
        for root in sorted(roots):
            problems += _diff(gen / root, args.out.resolve() / root, args.out / root)
    if problems:
        print("generated code is out of date with the .proto sources:", *problems, sep="\n  ", file=sys.stderr)
        # the same tree and output as this check, or the fix would regenerate somewhere else
        given = sys.argv[1:] if argv is None else argv
        rerun = shlex.join(["python", "-m", "stigmer_core.protogen", *(arg for arg in given if arg != "--check")])
        print(f"regenerate with: {rerun}", file=sys.stderr)
        return 1
    print("generated code matches the .proto sources")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
