"""One way to get a channel, local or remote.

``connect()`` returns a ``Client`` whose ``channel`` generated stubs use
unchanged; whether it reaches a daemon over the network or serves the
store in this process is the only difference, and callers never see it.

Over the network a token travels as ``authorization: Bearer <token>`` (what
the official stigmer-sdk sends too). A non-loopback endpoint is dialled
with TLS, and a token is never sent in clear to one.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from stigmer_core.auth.transport import client_credentials, is_loopback, refuse_plaintext_token, usable_token
from stigmer_core.channel import CLOSED
from stigmer_core.datadir import holder
from stigmer_core.errors import InvalidArgument
from stigmer_core.keepalive import ClientKeepalive
from stigmer_core.local_socket import UnixTarget, socket_path

if TYPE_CHECKING:
    from stigmer_core.application import Application

S = TypeVar("S")

LOCAL = "local"
CLIENT_KEEPALIVE = ClientKeepalive()


class Client:
    """What ``connect()`` returns: ``channel`` for generated stubs, and ``close()`` (or ``with``)
    to let go of it, and of the store when it was opened in this process.

    One client may be shared by threads, as a grpc channel is; an in-process one serves the
    calls in the calling threads. ``target`` is where it leads (``local`` in process)."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        target: str,
        app: Application | None = None,
        unix: UnixTarget | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """``release``: what lets go of ``app`` (shared by the clients ``connect()`` opened on it);
        else ``close()`` closes it."""
        self.channel = channel
        self._unix = unix
        self.target = target
        self._app = app
        self._release = release

    @property
    def in_process(self) -> bool:
        return self._app is not None

    def __repr__(self) -> str:
        how = "in process" if self.in_process else "through the daemon's Unix socket" if self._unix else "over gRPC"
        return f"<stigmer_core.Client {self.target} ({how})>"

    def stub(self, stub_class: type[S]) -> S:
        """``client.stub(AgentCommandControllerStub)``: any generated stub."""
        return stub_class(self.channel)  # type: ignore[call-arg]

    def close(self) -> None:
        interceptor = _INTERCEPTORS.get(self.channel)
        if interceptor is not None:  # first: a call through it on the closed channel would crash grpc
            interceptor.close()
        self.channel.close()
        if self._unix is not None:
            self._unix.close()
        if self._release is not None:
            release, self._release = self._release, _released  # once, however often it is closed
            release()
        elif self._app is not None:
            self._app.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call, so callers never pass it.

    ``close()``: its calls raise ``ValueError`` as a closed grpc channel's do. A call through grpc's
    intercepted channel after the channel under it was closed crashed the process (a segmentation
    fault, in grpcio 1.85), so a ``Client`` closes this first and the call never reaches it."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def _with_token(self, details: Any) -> Any:
        if self._closed:
            raise ValueError(CLOSED)
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


def _intercepted(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """``channel`` sending ``token`` on every call; the interceptor is kept on the channel it makes
    (``_INTERCEPTORS``), so a ``Client`` closing it closes the interceptor first."""
    if not token:
        return channel
    interceptor = TokenInterceptor(token)
    intercepted = grpc.intercept_channel(channel, interceptor)
    _INTERCEPTORS[intercepted] = interceptor
    return intercepted


_INTERCEPTORS: weakref.WeakKeyDictionary[grpc.Channel, TokenInterceptor] = weakref.WeakKeyDictionary()


def network_channel(
    target: str,
    *,
    token: str | None = None,
    ca_file: str | None = None,
    tls: bool | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    keepalive: ClientKeepalive = CLIENT_KEEPALIVE,
) -> grpc.Channel:
    """A channel to ``host:port``: TLS unless the target is loopback (or ``tls`` says otherwise).

    ``ca_file`` trusts a private CA instead of grpc's default roots.
    ``cert_file`` and ``key_file`` (both or neither) are the client's
    certificate and key, which a server started with ``--tls-client-ca``
    (mutual TLS) asks for; either implies TLS, like ``ca_file``. A token
    rides on every call; it is refused on a plaintext channel to anything
    but loopback. ``keepalive``: how soon a call on a connection that went
    silent (its daemon's host unreachable) ends with UNAVAILABLE.
    """
    token = usable_token(token) if token else token  # connect() checked it already: a direct caller's
    secure = tls if tls is not None else (bool(ca_file or cert_file or key_file) or not is_loopback(target))
    if not secure:
        if token:
            refuse_plaintext_token(target)
        _PLAINTEXT.add(target)
        channel = grpc.insecure_channel(target, options=keepalive.options())
    else:
        channel = grpc.secure_channel(
            target, client_credentials(ca_file, cert_file, key_file), options=keepalive.options()
        )
    return _intercepted(channel, token)


_PLAINTEXT: set[str] = set()
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
"""Targets in grpc's own naming syntax, taken as they are."""


def dialled_in_plaintext(target: str) -> bool:
    """Whether this process dialled ``target`` without TLS (a loopback address given no CA or
    certificate): a TLS server's refusal of such a call asks for the CA before anything else."""
    return target in _PLAINTEXT


def connect(
    target: str | None = None,
    *,
    data_dir: str | Path | None = None,
    store: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    tls: bool | None = None,
    read_only: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Client:
    """A client for ``target``.

    - ``"host:port"`` (or a target in grpc's own syntax, ``dns:///host:port``; anything
      else, ``http://…`` or a host without a port, is refused ``InvalidArgument`` at once
      rather than at the first call): the daemon at that address, over gRPC (TLS for a
      non-loopback address or with ``ca_file``; ``tls`` True or False
      overrides that choice: a loopback TLS server needs ``tls=True`` or a
      ``ca_file``, or the call fails as a bare transport error; ``token`` on
      every call; ``cert_file`` and ``key_file``: the client certificate a
      mutual-TLS server asks for).
    - ``"local"`` (the default): the daemon holding ``data_dir`` if one runs
      (through its Unix socket when it has one: the owner's path, trusted as
      the local administrator), else the store in ``data_dir`` (or the
      database ``store`` names) opened in this process. ``token`` rides on
      every call there too: the caller is then that token's principal, with
      its roles, rather than the local administrator (how roles are tried
      locally). Without ``data_dir``,
      the data directory (and, without ``store``, the store) are the ones the
      CLI uses: ``STIGMER_DATA_DIR``, else the config file's
      ``local.data_dir``, else ``$STIGMER_HOME/data`` (``config_file.local_data``).
      ``read_only`` opens that store read-only (``Application.open``); a
      running daemon holds the key, so it is reached as it is.
    """
    target = target or LOCAL
    token = usable_token(token) if token else token
    if target != LOCAL and not target.startswith(_GRPC_SCHEMES):
        from stigmer_core.config_file import endpoint_problem

        problem = endpoint_problem(target)
        if problem is not None:  # else grpc dials it anyway, and says so only at the first call
            raise InvalidArgument.field("target", problem)
    if target != LOCAL:
        given = [name for name, value in (("data_dir", data_dir), ("store", store), ("read_only", read_only)) if value]
        if given:  # they name a store this process would open: a server's is its own (the CLI refuses both)
            raise InvalidArgument.field(
                given[0],
                f"names a store to open in this process, but the target {target!r} is a server, which serves its "
                "own: give one or the other (target 'local' for data_dir and store)",
            )
        channel = network_channel(target, token=token, ca_file=ca_file, tls=tls, cert_file=cert_file, key_file=key_file)
        return Client(channel, target=target)
    if data_dir:
        directory = Path(data_dir).expanduser()
    else:
        from stigmer_core.config_file import local_data  # reads YAML: only for a connect that needs it

        directory, resolved = local_data(store=store)
        store = resolved or None
    running = holder(directory)
    if running and running.get("address"):
        other = _serves_another_store(directory, running, store)
        if other is not None:
            from stigmer_core.config_file import ConfigError

            raise ConfigError(other)
        socket = socket_path(directory)
        if socket is not None and socket.exists():
            unix = UnixTarget(socket)
            channel = _with_token(grpc.insecure_channel(unix.address), token)
            return Client(channel, target=str(running["address"]), unix=unix)
        address = str(running["address"])
        return Client(
            network_channel(address, token=token, ca_file=ca_file, tls=tls, cert_file=cert_file, key_file=key_file),
            target=address,
        )
    app, release = _shared_app(directory, store, read_only)
    return Client(_with_token(app.channel(), token), target=LOCAL, app=app, release=release)


_SHARED: dict[tuple[str, str | None, bool], list[Any]] = {}
"""(data directory, store, read_only) -> [the application, how many clients hold it] in this process."""
_SHARED_LOCK = threading.Lock()


def _released() -> None:
    return None


def _shared_app(directory: Path, store: str | None, read_only: bool) -> tuple[Application, Callable[[], None]]:
    """The store opened in this process, shared by every ``connect()`` naming it: LMDB lets a
    process open a store once, and a second ``connect(data_dir=D)`` (two parts of one program)
    was refused, "already open in this process". Closed when its last client closes."""
    from stigmer_core.application import Application  # here: a client of a daemon serves nothing

    key = (str(directory.resolve()), store, read_only)
    with _SHARED_LOCK:
        held = _SHARED.get(key)
        if held is None or held[0].closed or held[0].forked:  # a parent's is not this process's
            held = _SHARED[key] = [Application.open(directory, store=store, read_only=read_only, transient=True), 0]
        held[1] += 1
    app = held[0]

    def release() -> None:
        with _SHARED_LOCK:
            held[1] -= 1
            last = held[1] == 0
            if last and _SHARED.get(key) is held:
                del _SHARED[key]
        if last:
            app.close()

    return app, release


def _serves_another_store(directory: Path, running: dict[str, Any], store: str | None) -> str | None:
    """Why a call naming the database ``store`` is not sent to the daemon holding ``directory``:
    that daemon serves another store (its local one, or another database or schema). With
    ``STIGMER_STORE`` set to the team's database and the laptop's own daemon running, an
    ``import`` wrote into the laptop's store and said it imported. None: the daemon serves
    ``store``, or no database is named (the directory's daemon is then the one meant), or the
    daemon is of a release that does not say what it serves."""
    if not store or "store" not in running:
        return None
    from stigmer_core.store.engines import database_identity, describe, is_database_url

    if not is_database_url(store):
        return None
    wanted, served = describe(store), str(running["store"])
    if is_database_url(served) and database_identity(served) == database_identity(store):
        return None
    theirs = f"the database {served}" if served else f"the local store in {directory}"
    return (
        f"the daemon holding {directory} (pid {running.get('pid', '?')}, listening on {running['address']}) serves "
        f"{theirs}, but the store named here is the database {wanted}, and this call would have gone to the "
        "daemon's instead: to work on the database, stop that daemon (`stigmer local stop`) or call a daemon "
        "serving the database (--backend remote --endpoint HOST:PORT, or --data-dir of one on this machine); to "
        "work on the daemon's store, leave the database out (STIGMER_STORE, the config file's store, --store)"
    )


def _with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """A local channel (the daemon's Unix socket, or the store in process) sends a given token too:
    dropped, a viewer's token wrote as the local administrator."""
    return _intercepted(channel, token)
