"""``pip install`` of the example kind package makes the daemon serve its
services, with no change to stigmer_core; ``pip uninstall`` takes them away.

The package's wheel is built from a copy of ``examples/stigmer-kind-prompt``
(with this interpreter's setuptools and no network when it is recent enough,
else in pip's isolated build environment, which fetches setuptools from the
package index), then installed with pip into a throwaway virtual environment
layered on this one (its ``site-packages`` adds this interpreter's).
The daemon runs in that environment on an ephemeral 127.0.0.1 port; this
process sees it only as a client: server reflection, and calls made from
the descriptors reflection returns.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stigmer-kind-prompt"
DISTRIBUTION = "stigmer-kind-prompt"
PROMPT_SERVICES = {"acme.prompt.v1.PromptCommandController", "acme.prompt.v1.PromptQueryController"}
STEP_TIMEOUT = 120
_SERVE = "import sys; from stigmer_core.server import serve; sys.exit(serve('127.0.0.1:0', sys.argv[1], grace=2))"
_READY = "stigmer daemon listening on "

pytestmark = pytest.mark.timeout(600)


def _local_build_backend() -> bool:
    """Whether this interpreter's setuptools can build the example (77+ reads its SPDX license)."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 77
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


BUILD = ("--no-build-isolation", "--no-index") if _local_build_backend() else ()


def _installed_here() -> bool:
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# Skipped only where the example is installed into this interpreter (its own venv); the main
# suite, which CI runs, never installs it, so there the install/uninstall path is always tested.
if _installed_here():
    pytest.skip(
        f"{DISTRIBUTION} is installed in this interpreter, so an environment layered on it always sees the "
        "package and its removal cannot be observed; the example's own suite covers it installed",
        allow_module_level=True,
    )


class Environment:
    """A virtual environment whose site-packages also reads this interpreter's."""

    def __init__(self, root: Path) -> None:
        venv.create(root, with_pip=False)
        self.python = str(root / "bin" / "python")
        site = Path(self._run("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
        base = sysconfig.get_paths()["purelib"]
        (site / "_stigmer_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")

    def _run(self, *args: str) -> str:
        done = subprocess.run([self.python, *args], capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def pip(self, *args: str) -> str:
        return self._run("-m", "pip", "--disable-pip-version-check", "--no-input", *args)


class Daemon:
    """``stigmer_core.server.serve`` (what ``stigmer serve`` runs) in the environment."""

    def __init__(self, env: Environment, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [env.python, "-c", _SERVE, str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.address = self._address()

    def _address(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STEP_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0 and selector.select(timeout=left):
                line = self.proc.stdout.readline()
                if line.startswith(_READY):
                    return line.removeprefix(_READY).split(" ", 1)[0]
                if not line:
                    break
        self.stop()
        raise AssertionError(f"daemon did not start: {self.proc.communicate(timeout=STEP_TIMEOUT)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=STEP_TIMEOUT)


def _services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    return {s.name for r in responses for s in r.list_services_response.service}


def _call(channel: grpc.Channel, pool: Any, path: str, request: Any) -> Any:
    service, method = path.strip("/").split("/")
    output = pool.FindServiceByName(service).methods_by_name[method].output_type
    call = channel.unary_unary(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=message_factory.GetMessageClass(output).FromString,
    )
    return call(request, timeout=10)


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[Environment]:
    yield Environment(tmp_path / "venv")


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """The example's wheel, built from a copy so that nothing is written into the repository."""
    copy = tmp_path / "src" / EXAMPLE.name
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
    out = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), *BUILD, str(copy)],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("stigmer_kind_prompt-*.whl")
    return wheel


@contextlib.contextmanager
def _serve(env: Environment, data_dir: Path) -> Iterator[tuple[Daemon, grpc.Channel]]:
    daemon = Daemon(env, data_dir)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            yield daemon, channel
    finally:
        daemon.stop()


def test_install_serves_the_kind_and_uninstall_removes_it_keeping_its_data(
    environment: Environment, package: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    environment.pip("install", "--no-deps", "--no-index", "--quiet", str(package))
    assert DISTRIBUTION in environment.pip("list", "--format=freeze")

    with _serve(environment, data_dir) as (daemon, channel):
        assert daemon.address.startswith("127.0.0.1:")
        assert _services(channel) >= PROMPT_SERVICES
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        prompt_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.prompt.v1.Prompt"))
        prompt = prompt_cls()
        prompt.metadata.name = "Greeting"
        prompt.spec.template = "Hello {{who}}"
        prompt.spec.variables["who"].required = True
        created = _call(channel, pool, "/acme.prompt.v1.PromptCommandController/create", prompt)
        assert created.metadata.id.startswith("prm-") and list(created.status.placeholders) == ["who"]
        render_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.prompt.v1.RenderPromptRequest"))
        rendered = _call(
            channel,
            pool,
            "/acme.prompt.v1.PromptQueryController/render",
            render_cls(prompt_id=created.metadata.id, values={"who": "Ada"}),
        )
        assert rendered.text == "Hello Ada"
        prompt.spec.template = "Hello {{whom}}"
        with pytest.raises(grpc.RpcError) as caught:
            _call(channel, pool, "/acme.prompt.v1.PromptCommandController/create", prompt)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "spec.template" in caught.value.details()

    environment.pip("uninstall", "--yes", "--quiet", DISTRIBUTION)
    assert DISTRIBUTION not in environment.pip("list", "--format=freeze")

    with _serve(environment, data_dir) as (_, channel):
        found = _services(channel)
        assert not PROMPT_SERVICES & found
        assert "stigmer.agentic.agent.v1.AgentCommandController" in found
        call = channel.unary_unary("/acme.prompt.v1.PromptQueryController/get")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    environment.pip("install", "--no-deps", "--no-index", "--quiet", str(package))
    with _serve(environment, data_dir) as (_, channel):
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        id_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.prompt.v1.PromptId"))
        again = _call(channel, pool, "/acme.prompt.v1.PromptQueryController/get", id_cls(value=created.metadata.id))
        same = again.SerializeToString(deterministic=True) == created.SerializeToString(deterministic=True)
        assert same, "the store keeps an uninstalled kind's objects, served again once it is back"
