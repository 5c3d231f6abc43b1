"""The orgs' shares of the LMDB engine's event log, as its writer keeps them in memory.

A commit past a bound drops the oldest revision of the partition holding the
most (store/retention.py), and every commit counts its revision in its
partition's share. Both must cost the same with ten orgs or ten thousand:
so the shares as last committed are kept in a dict, and the largest found
through two heaps (by revisions, by bytes) whose outdated entries are
dropped when they come to the top, rather than by walking every share.

The engine has one writer, so what it committed is what the store holds;
a batch's callers change shares through a small dict of changes handed from
caller to caller (a caller whose write fails leaves it as it was), and the
book takes the changes only once the batch has committed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Share(NamedTuple):
    """One partition's share of the event log (``m/event-part/<partition>``)."""

    revisions: int = 0
    size: int = 0
    compacted: int = 0
    """The newest revision pruned from it: kept when it holds nothing, for streams resuming in it."""

    @classmethod
    def parse(cls, raw: bytes | None) -> Share:
        if not raw:
            return NO_SHARE
        return cls(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:16], "big"), int.from_bytes(raw[16:24], "big"))

    def packed(self) -> bytes:
        return self.revisions.to_bytes(8, "big") + self.size.to_bytes(8, "big") + self.compacted.to_bytes(8, "big")

    def held(self, by_bytes: bool) -> int:
        """What the bound in question counts of it (nothing while it holds no revision)."""
        if not self.revisions:
            return 0
        return self.size if by_bytes else self.revisions


NO_SHARE = Share()
Changes = Mapping[bytes, Share]
"""Shares a batch changed so far, by partition; never changed in place once handed on."""


class ShareBook:
    """The shares as last committed, and the heaps that find the largest."""

    def __init__(self, shares: Iterable[tuple[bytes, Share]]) -> None:
        self.committed: dict[bytes, Share] = dict(shares)
        self._heaps: tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]] = ([], [])
        self._unheaped: set[bytes] = set()
        """Partitions committed since the heaps last took their shares: pushed when ``largest``
        next looks, which only a commit past a retention bound asks, not at every commit."""
        self._rebuild()

    def get(self, part: bytes, changes: Changes) -> Share:
        found = changes.get(part)
        return found if found is not None else self.committed.get(part, NO_SHARE)

    def largest(self, changes: Changes, by_bytes: bool) -> bytes | None:
        """The partition holding the most, counting ``changes``; ties to the first name in byte order.

        The committed shares' best comes from a heap (an entry is current while its share still
        holds what it says; one that is not is dropped for good, since any later change pushes a
        current one); the partitions in ``changes`` are few and looked at one by one.
        """
        if self._unheaped:
            self._push_unheaped()
        best: tuple[int, bytes] | None = None
        for part, share in changes.items():
            held = share.held(by_bytes)
            if held and (best is None or (-held, part) < best):
                best = (-held, part)
        heap = self._heaps[by_bytes]
        passed: list[tuple[int, bytes]] = []
        while heap:
            entry = heap[0]
            held, part = -entry[0], entry[1]
            if self.committed.get(part, NO_SHARE).held(by_bytes) != held or not held:
                heapq.heappop(heap)  # outdated
                continue
            if part in changes:  # counted above, as this batch left it
                passed.append(heapq.heappop(heap))
                continue
            if best is None or entry < best:
                best = entry
            break
        for entry in passed:
            heapq.heappush(heap, entry)
        return None if best is None else best[1]

    def commit(self, changes: Changes) -> None:
        """Take a committed batch's changes (into the heaps when ``largest`` next looks)."""
        self.committed.update(changes)
        self._unheaped.update(changes)

    def _push_unheaped(self) -> None:
        """Push the current share of every partition committed since the last push: what
        pushing each commit's share as it came leaves current in the heaps (the earlier
        ones would be outdated, and dropped when they came to the top)."""
        committed = self.committed
        for part in self._unheaped:
            share = committed[part]
            for by_bytes, heap in enumerate(self._heaps):
                held = share.held(bool(by_bytes))
                if held:
                    heapq.heappush(heap, (-held, part))
        self._unheaped.clear()
        if len(self._heaps[0]) + len(self._heaps[1]) > 4 * len(committed) + 256:
            self._rebuild()  # outdated entries pile up under a steady stream of commits

    def _rebuild(self) -> None:
        self._unheaped.clear()  # every committed share is pushed here
        for by_bytes, heap in enumerate(self._heaps):
            heap[:] = [(-s.held(bool(by_bytes)), p) for p, s in self.committed.items() if s.held(bool(by_bytes))]
            heapq.heapify(heap)
