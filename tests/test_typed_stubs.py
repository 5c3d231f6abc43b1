"""Every service's client stub is typed (``_pb2_grpc.pyi``, from mypy-protobuf): each method an
attribute of its request and response types, sync and asyncio, so a client's type checker (with
types-grpcio installed) catches a wrong message; the servicer half, which the ``.py`` does not
have, is not promised either. Read from the checked-in files against the services' descriptors."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
from google.protobuf.descriptor import MethodDescriptor

import stigmer_core.api

CALLABLES = {
    (False, False): "UnaryUnaryMultiCallable",
    (False, True): "UnaryStreamMultiCallable",
    (True, False): "StreamUnaryMultiCallable",
    (True, True): "StreamStreamMultiCallable",
}


def _service_modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(stigmer_core.api.__path__, "stigmer_core.api."):
        if (
            info.name.endswith("_pb2")
            and ".buf." not in info.name
            and importlib.import_module(info.name).DESCRIPTOR.services_by_name
        ):
            found.append(info.name)
    return found


def _annotations(tree: ast.Module, cls: str) -> dict[str, str]:
    [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return {
        item.target.id: ast.unparse(item.annotation)
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def _typed(method: MethodDescriptor, module: str) -> str:
    callable_name = CALLABLES[(method.client_streaming, method.server_streaming)]

    def name(message: object) -> str:
        file = message.file.name  # type: ignore[attr-defined]
        return f"_{Path(file).stem}_pb2.{message.name}"  # type: ignore[attr-defined]

    return f"{module}.{callable_name}[{name(method.input_type)}, {name(method.output_type)}]"


@pytest.mark.parametrize("module", _service_modules())
def test_each_stub_method_is_typed_with_its_messages(module: str) -> None:
    pb2 = importlib.import_module(module)
    stubs = Path(pb2.__file__).with_name(f"{module.rsplit('.', 1)[1]}_grpc.pyi")
    tree = ast.parse(stubs.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert not {c for c in classes if c.endswith("Servicer")}, "the servicer half is stripped, as from the .py"
    for service in pb2.DESCRIPTOR.services_by_name.values():
        sync = _annotations(tree, f"{service.name}Stub")
        asyncio = _annotations(tree, f"{service.name}AsyncStub")
        for method in service.methods:
            assert sync[method.name] == _typed(method, "_grpc"), (service.name, method.name)
            assert asyncio[method.name] == _typed(method, "_aio"), (service.name, method.name)
        assert set(sync) == {m.name for m in service.methods}
