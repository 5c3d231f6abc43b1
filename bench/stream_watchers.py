"""The watchers of the ``streams`` scenario, in a process of their own, so the daemon's CPU is
measured alone: ``python -m bench.stream_watchers ADDRESS COUNT``.

Opens COUNT watches (half of Agent, half of AgentInstance), prints ``open`` once each has its
first message, then counts what they receive. Given a number on stdin, the events sent meanwhile,
it waits (30 s at most) until as many have come, prints how many did and exits.
"""

from __future__ import annotations

import sys
import threading
import time

import grpc

from stigmer_core.api.commons.watch.v1 import watch_pb2, watch_pb2_grpc

KINDS = ("Agent", "AgentInstance")


def main(address: str, count: int) -> None:
    channel = grpc.insecure_channel(address)
    received = [0] * count
    opened = threading.Semaphore(0)
    streams = []

    def follow(i: int, stream: grpc.Call) -> None:
        try:
            for _ in stream:  # type: ignore[attr-defined]
                received[i] += 1
                if received[i] == 1:
                    opened.release()
        except grpc.RpcError:  # cancelled at the end
            pass

    for i in range(count):
        stream = watch_pb2_grpc.WatchStub(channel).Watch(watch_pb2.WatchRequest(kind=KINDS[i % 2]), timeout=600)
        streams.append(stream)
        threading.Thread(target=follow, args=(i, stream), daemon=True).start()
    for _ in range(count):
        if not opened.acquire(timeout=60):
            raise SystemExit("the watches did not open")
    print("open", flush=True)
    sent = int(sys.stdin.readline())
    deadline = time.monotonic() + 30
    while sum(received) - count < sent and time.monotonic() < deadline:  # less each watch's first bookmark
        time.sleep(0.01)
    print(sum(received) - count, flush=True)
    for stream in streams:
        stream.cancel()
    channel.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
