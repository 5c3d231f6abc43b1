"""The real daemon (``stigmer_core.server.serve``, what ``stigmer serve`` runs)
in a child process on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_SERVE = "import sys; from stigmer_core.server import serve; sys.exit(serve('127.0.0.1:0', sys.argv[1], grace=2))"
_READY = "stigmer daemon listening on "


class Daemon:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.banner = self._read_banner()
        self.address = self.banner.removeprefix(_READY).split(" ", 1)[0]

    def _read_banner(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(timeout=left):
                    line = self.proc.stdout.readline()
                    if line.startswith(_READY):
                        return line.strip()
                    if not line:
                        break
        self.kill()
        raise AssertionError(f"daemon did not start: {self.proc.communicate(timeout=STOP_TIMEOUT)}")

    def stop(self) -> int:
        """SIGTERM, as a service manager would; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=STOP_TIMEOUT)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=STOP_TIMEOUT)
