"""Unary gRPC load from nghttp2's ``h2load``, a load generator written in C.

A Python client spends about 110-180 µs of CPU per call (grpc futures), as
much as a PostgreSQL round trip and half a daemon's own work: on a 2-core
machine that also runs the database and the daemons, it takes the core the
second daemon would use, and a two-daemon figure measures the client. h2load
spends a few µs per call. It speaks HTTP/2, so a call is a POST of the
length-prefixed request with gRPC's headers; it counts a response as
succeeded on HTTP 200, which gRPC sends for errors too, so every run also
checks that the DATA received is one full response per call (an error has no
DATA frame) and that each call's log line says 200.

Debian and Ubuntu ship it in ``nghttp2-client``; without it the rows that
use it are left out and the run says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.drive import CallFailed
from bench.results import Measurement

PACKAGE = "nghttp2-client"
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored")
_DATA = re.compile(r"traffic: .*\((\d+)\) data")


def available() -> bool:
    return shutil.which("h2load") is not None


def unary(
    name: str,
    targets: Sequence[str],
    path: str,
    request: bytes,
    response_bytes: int,
    *,
    in_flight: int,
    seconds: float,
) -> Measurement:
    """One h2load process per entry of ``targets`` (``host:port``; the same one twice
    keeps the shape of a two-target run), each with ``in_flight / len(targets)`` calls
    outstanding on one connection, for ``seconds``. ``response_bytes`` is the size of
    one serialized response, for the DATA check."""
    per_target = max(1, in_flight // len(targets))
    with tempfile.TemporaryDirectory(prefix="stigmer-h2load-") as tmp:
        work = Path(tmp)
        body = work / "request.bin"
        body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        runs = []
        for i, target in enumerate(targets):
            log = work / f"calls-{i}.tsv"
            command = [
                "h2load", "--duration", f"{seconds:g}", "--clients", "1", "--threads", "1",
                "--max-concurrent-streams", str(per_target), "--data", str(body),
                "--header", "content-type: application/grpc", "--header", "te: trailers",
                "--log-file", str(log), f"http://{target}{path}",
            ]  # fmt: skip
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            runs.append((process, log))
        latencies: list[float] = []
        for process, log in runs:
            out = process.communicate(timeout=seconds + 60)[0]
            counts = _REQUESTS.search(out)
            traffic = _DATA.search(out)
            if process.returncode != 0 or counts is None or traffic is None:
                raise CallFailed(f"{name}: h2load failed (exit {process.returncode}):\n{out}")
            succeeded, failed, errored = int(counts.group(4)), int(counts.group(5)), int(counts.group(6))
            if failed or errored or not succeeded:
                raise CallFailed(f"{name}: {failed} failed and {errored} errored of {counts.group(3)} calls:\n{out}")
            if int(traffic.group(1)) < succeeded * (5 + response_bytes):
                raise CallFailed(f"{name}: {traffic.group(1)} bytes of DATA for {succeeded} calls: some were errors")
            for line in log.read_text().splitlines():
                _, status, micros = line.split("\t")[:3]
                if status != "200":
                    raise CallFailed(f"{name}: a call answered HTTP {status}")
                latencies.append(int(micros) / 1e6)
    return Measurement.of(name, latencies, seconds, 0.0, in_flight=per_target * len(targets))
