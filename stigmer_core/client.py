"""One way to get a channel, local or remote.

``connect()`` returns a ``Client`` whose ``channel`` generated stubs use
unchanged; whether it reaches a daemon over the network or serves the
store in this process is the only difference, and callers never see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import grpc

from stigmer_core.application import Application
from stigmer_core.datadir import holder
from stigmer_core.server import default_data_dir

S = TypeVar("S")

LOCAL = "local"


class Client:
    def __init__(self, channel: grpc.Channel, *, target: str, app: Application | None = None) -> None:
        self.channel = channel
        self.target = target
        self._app = app

    @property
    def in_process(self) -> bool:
        return self._app is not None

    def stub(self, stub_class: type[S]) -> S:
        """``client.stub(AgentCommandControllerStub)``: any generated stub."""
        return stub_class(self.channel)  # type: ignore[call-arg]

    def close(self) -> None:
        self.channel.close()
        if self._app is not None:
            self._app.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(target: str | None = None, *, data_dir: str | Path | None = None, store: str | None = None) -> Client:
    """A client for ``target``.

    - ``"host:port"``: the daemon at that address, over gRPC.
    - ``"local"`` (the default): the daemon holding ``data_dir`` if one runs,
      else the store in ``data_dir`` (or the database ``store`` names)
      opened in this process.
    """
    target = target or LOCAL
    if target != LOCAL:
        return Client(grpc.insecure_channel(target), target=target)
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    running = holder(directory)
    if running and running.get("address"):
        address = str(running["address"])
        return Client(grpc.insecure_channel(address), target=address)
    app = Application.open(directory, store=store)
    return Client(app.channel(), target=LOCAL, app=app)
