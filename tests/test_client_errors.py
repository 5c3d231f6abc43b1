"""What a Python program gets back from ``from_rpc_error``: the class and the status code a failed
call stands for, and a TLS mistake made through ``connect()`` said in a person's words.

A DEADLINE_EXCEEDED, UNKNOWN, INTERNAL or CANCELLED came back as a bare ``StigmerError`` whose
code only the grpc error still knew; a wrong CA came back in OpenSSL's words, which the command
line translated and a program did not. Real servers throughout: the framework's own, over TLS
and in process, and a plain grpc server standing for one that is not stigmer's (a proxy).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from stigmer_core import Application, connect, errors, from_rpc_error
from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc
from stigmer_core.auth.transport import TlsFiles
from stigmer_core.kind_client import KindClient
from stigmer_core.server import Server
from stigmer_core.status import abort
from tests.auth_support import make_pki, served

SENT = sorted(
    (
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls) and issubclass(cls, errors.StigmerError) and not issubclass(cls, errors.StartupError)
    ),
    key=lambda cls: cls.__name__,
)
"""Every class of the tree a server sends (a StartupError never is)."""


PROXIED = "upstream connect error: TLS error: CERTIFICATE_VERIFY_FAILED: certificate verify failed"
"""A proxy's words for its own upstream's certificate (Envoy's, in substance)."""
PASSED_ON = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.7:443: Tls handshake failed "
    "(TSI_PROTOCOL_FAILURE): certificate verify failed"
)
"""grpc's words for a connection a server's own code failed to open, passed on in its refusal."""


class _Answers(grpc.GenericRpcHandler):
    """``/raise/<Class>`` raises that class as a stigmer server sends it (``status.abort``), and
    ``/passed-on/Unavailable`` an Unavailable carrying grpc's words for a TLS failure of its own;
    ``/code/<CODE>`` ends the call with a bare status of that code, as any grpc server may."""

    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        _, what, name = details.method.split("/")

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            if what == "raise":
                abort(context, getattr(errors, name)(f"refused as {name}"))
            if what == "passed-on":
                abort(context, errors.Unavailable(PASSED_ON))
            context.abort(grpc.StatusCode[name], PROXIED if name == "UNAVAILABLE" else f"ended {name}")
            raise AssertionError("abort returned")

        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[grpc.Channel]:
    """A grpc server that is not stigmer's, and a channel to it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([_Answers()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(grace=None)


def _failed(call: Callable[[], object]) -> grpc.RpcError:
    try:
        got = call()
        if isinstance(got, Iterator):
            next(got)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected a failed call, got {got}")


@pytest.mark.parametrize("cls", SENT, ids=lambda cls: cls.__name__)
def test_every_class_a_server_sends_comes_back_as_itself_with_its_code(
    plain_server: grpc.Channel, cls: type[errors.StigmerError]
) -> None:
    raised = _failed(lambda: plain_server.unary_unary(f"/raise/{cls.__name__}")(b"", timeout=10))
    found = from_rpc_error(raised)
    assert type(found) is cls and found.code == raised.code() == cls("made here").code  # type: ignore[attr-defined]
    assert found.reason == cls.reason and found.message == f"refused as {cls.__name__}"


BARE = {
    grpc.StatusCode.UNKNOWN: errors.StigmerError,
    grpc.StatusCode.CANCELLED: errors.StigmerError,
    grpc.StatusCode.INTERNAL: errors.StigmerError,
    grpc.StatusCode.DATA_LOSS: errors.StigmerError,
    grpc.StatusCode.OUT_OF_RANGE: errors.StigmerError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
}


@pytest.mark.parametrize(("code", "cls"), BARE.items(), ids=[code.name for code in BARE])
def test_a_bare_status_keeps_its_code_whatever_class_stands_for_it(
    plain_server: grpc.Channel, code: grpc.StatusCode, cls: type[errors.StigmerError]
) -> None:
    """A status with no details (grpc's own, a proxy's, an older daemon's): the class its code has,
    a bare StigmerError for the codes no class stands for, and the code itself on each."""
    found = from_rpc_error(_failed(lambda: plain_server.unary_unary(f"/code/{code.name}")(b"", timeout=10)))
    assert type(found) is cls and found.code == code


def test_a_deadline_and_a_cancel_made_by_the_client_keep_their_codes(tmp_path: Path) -> None:
    with Application.open(tmp_path / "data", durable=False) as app:
        agents = KindClient(app.channel(), app.registry.kind("Agent"))
        late = from_rpc_error(_failed(lambda: agents.get("agt-01hzzzzzzzzzzzzzzzzzzzzzzz", timeout=0)))
        assert type(late) is errors.DeadlineExceeded and late.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with served(app, max_workers=2) as server, grpc.insecure_channel(server.address) as channel:
            stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind="Agent"), timeout=30)
            assert next(stream).type == watch_pb2.WATCH_EVENT_TYPE_BOOKMARK
            stream.cancel()
            cancelled = from_rpc_error(_failed(lambda: next(stream)))
    assert type(cancelled) is errors.StigmerError and cancelled.code == grpc.StatusCode.CANCELLED


# -- TLS mistakes made through connect() ----------------------------------------------


def _said(client: Any, app: Application) -> errors.StigmerError:
    with client:
        return from_rpc_error(_failed(KindClient(client.channel, app.registry.kind("Agent")).list_page))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    with Application.open(tmp_path / "data", durable=False) as app:
        yield app


def test_tls_mistakes_through_connect_are_said_naming_its_arguments(app: Application, tmp_path: Path) -> None:
    for name in ("served", "other"):
        (tmp_path / name).mkdir()
    pki, other = make_pki(tmp_path / "served"), make_pki(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    tls = Server(app, "127.0.0.1:0", max_workers=2, tls=TlsFiles(str(pki.server_cert), str(pki.server_key)))
    # a certificate the CA signed, naming another host (runner-1) than the one dialled
    misnamed = Server(app, "127.0.0.1:0", max_workers=2, tls=TlsFiles(str(pki.client_cert), str(pki.client_key)))
    plain = Server(app, "127.0.0.1:0", max_workers=2)
    for server in (tls, misnamed, plain):
        server.start()
    try:
        cases = {
            "wrong CA": (
                connect(tls.address, ca_file=str(other.ca)),
                "its certificate is not signed by a CA this client trusts (give the CA that signed it with "
                "connect(ca_file=...)",
            ),
            "CA file no PEM": (
                connect(tls.address, ca_file=str(garbage)),
                "the CA file (ca_file=), or the client certificate and key (cert_file=, key_file=), could not be used",
            ),
            "client certificate no PEM": (
                connect(tls.address, ca_file=str(pki.ca), cert_file=str(garbage), key_file=str(pki.client_key)),
                "the CA file (ca_file=), or the client certificate and key (cert_file=, key_file=), could not be used",
            ),
            "host not named": (
                connect(misnamed.address, ca_file=str(pki.ca)),
                "its certificate does not name the host dialled",
            ),
            "server without TLS": (
                connect(plain.address, ca_file=str(pki.ca)),
                "the TLS handshake failed (does the server serve TLS",
            ),
        }
        for case, (client, words) in cases.items():
            found = _said(client, app)
            assert type(found) is errors.Unavailable and found.code == grpc.StatusCode.UNAVAILABLE, case
            assert found.message.startswith(f"cannot open TLS to the server: {words}"), (case, found.message)
            assert "--ca-file" not in found.message and "grpc: failed to connect to all addresses" in found.message
        with connect(tls.address, ca_file=str(pki.ca)) as client:
            assert KindClient(client.channel, app.registry.kind("Agent")).list_page().entries == []
    finally:
        for server in (tls, misnamed, plain):
            server.stop(grace=1)


def test_a_connection_closed_as_it_opens_names_what_connect_could_be_missing(app: Application, tmp_path: Path) -> None:
    """Plaintext to a TLS server, and TLS without a client certificate to one asking for it, were
    UNAVAILABLE "Socket closed" and nothing more: grpc's client cannot tell them apart, so the
    message names both of connect()'s arguments that would help."""
    pki = make_pki(tmp_path)
    served = TlsFiles(str(pki.server_cert), str(pki.server_key))
    tls = Server(app, "127.0.0.1:0", max_workers=2, tls=served)
    mutual = Server(app, "127.0.0.1:0", max_workers=2, tls=attrs.evolve(served, client_ca=str(pki.ca)))
    for server in (tls, mutual):
        server.start()
    try:
        for client in (connect(tls.address), connect(mutual.address, ca_file=str(pki.ca))):
            found = _said(client, app)
            assert type(found) is errors.Unavailable and found.code == grpc.StatusCode.UNAVAILABLE
            assert found.message.startswith("cannot open a connection to the server: it closed each connection"), found
            assert "connect(ca_file=...), or tls=True" in found.message, found.message
            assert "connect(cert_file=..., key_file=...)" in found.message and "Socket closed" in found.message
        both = (str(pki.client_cert), str(pki.client_key))
        with connect(mutual.address, ca_file=str(pki.ca), cert_file=both[0], key_file=both[1]) as client:
            assert KindClient(client.channel, app.registry.kind("Agent")).list_page().entries == []
    finally:
        for server in (tls, mutual):
            server.stop(grace=1)


def test_a_servers_unavailable_is_never_taken_for_this_clients_tls(plain_server: grpc.Channel) -> None:
    """A proxy's UNAVAILABLE telling of its upstream's certificate, and a stigmer server's passing on
    grpc's words for a connection its own code could not open, come from a server this client
    reached: they are passed on as they came, whatever words of TLS they hold."""
    proxied = from_rpc_error(_failed(lambda: plain_server.unary_unary("/code/UNAVAILABLE")(b"", timeout=10)))
    passed_on = from_rpc_error(_failed(lambda: plain_server.unary_unary("/passed-on/Unavailable")(b"", timeout=10)))
    assert (proxied.message, passed_on.message) == (PROXIED, PASSED_ON)
    for found in (proxied, passed_on):
        assert type(found) is errors.Unavailable and found.code == grpc.StatusCode.UNAVAILABLE
