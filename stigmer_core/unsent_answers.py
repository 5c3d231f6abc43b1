"""Answers a caller has not read yet, held to a bound per caller and per daemon.

grpc keeps a unary call's serialized answer until the client's HTTP/2 flow
control lets it out, and the call ends only then. A client that stops reading
(it sends no WINDOW_UPDATE, one raw socket is enough, with a viewer's token)
kept every answer it asked for: 150 list pages of 2.5 MB held 670 MB of a
daemon for as long as the socket stayed open. So the bytes of answers made
and not yet sent are counted per principal and for the whole daemon, from
when the answer is serialized to when its call ends; a call of a principal
at its share, of one whose org's principals together are at the org's
share (an org's admin can make more tokens), or while the daemon is at its
total, is refused
RESOURCE_EXHAUSTED (reason ``UNSENT_ANSWER_LIMIT``) before it does any work.
Counted only where tokens are required (a team server): a loopback daemon
without tokens has one user, whose client reads what it asks for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stigmer_core.accounts import Account
from stigmer_core.errors import ResourceExhausted

PER_CALLER_ENV = "STIGMER_MAX_UNSENT_BYTES_PER_CALLER"
PER_ORG_ENV = "STIGMER_MAX_UNSENT_BYTES_PER_ORG"
TOTAL_ENV = "STIGMER_MAX_UNSENT_BYTES"
REASON = "UNSENT_ANSWER_LIMIT"


class UnsentAnswers:
    """The bytes of answers made and not yet sent, by principal, by org and in all."""

    def __init__(self, per_caller: int, total: int, per_org: int | None = None) -> None:
        self.per_caller = per_caller
        self.per_org = total if per_org is None else per_org
        self.total = total
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._orgs: dict[str, int] = {}
        self._all = 0
        self.reads: frozenset[str] = frozenset()
        """The methods that only read (set by the server from the kinds' bindings): an answer of
        one is refused even after it is made when its account reached a bound meanwhile (``hold``)."""

    def check(self, account: Account) -> None:
        """Refuse a call of ``account`` while it, one of its orgs, or the daemon holds its bound of
        unsent answers."""
        refused = self._refusal(account)  # read without the lock: a bound, not a count
        if refused is not None:
            raise refused

    def _refusal(self, account: Account) -> ResourceExhausted | None:
        principal = account.principal
        held, total = self._held.get(principal, 0), self._all
        org, in_org = "", 0
        for name in account.orgs:
            in_org = self._orgs.get(name, 0)
            if in_org >= self.per_org:
                org = name
                break
        if held < self.per_caller and not org and total < self.total:
            return None
        if held >= self.per_caller:
            said = (
                f"{principal} has {held:,} bytes of answers its client has not read yet, the most one caller may "
                f"have ({PER_CALLER_ENV}, {self.per_caller:,}): read the answers already asked for, then retry"
            )
            setting, limit = PER_CALLER_ENV, self.per_caller
        elif org:
            said = (
                f"the callers of org {org} have {in_org:,} bytes of answers their clients have not read yet, the "
                f"most one org's callers may have together ({PER_ORG_ENV}, {self.per_org:,}): read the answers "
                "already asked for, or retry in a moment"
            )
            setting, limit = PER_ORG_ENV, self.per_org
        else:  # another caller's doing, most likely: this one can only wait
            said = (
                f"the daemon holds {total:,} bytes of answers its callers' clients have not read yet, the most it "
                f"holds ({TOTAL_ENV}, {self.total:,}): retry in a moment"
            )
            setting, limit = TOTAL_ENV, self.total
        metadata: dict[str, object] = {"limit": limit, "setting": setting, "principal": principal}
        if org:
            metadata["org"] = org
        return ResourceExhausted(said, reason=REASON, metadata=metadata)

    def hold(self, account: Account, size: int, method: str = "") -> Callable[[], None]:
        """Count ``size`` bytes of ``account``'s until what is returned is called (once counts).

        Calls admitted at one moment each passed ``check`` before any of their answers was
        counted, and together passed a bound by all their answers (20 gets of 200 kB held 2.6 MB
        against a 1 MB share). So an answer of a read (``method`` in ``reads``) is refused here,
        its account checked and its bytes counted in one step, when the bound was reached
        meanwhile: the answer is dropped, which a read can afford; a write's answer, whose
        change is made, is always sent."""
        if size <= 0:  # an empty answer (an empty page) holds nothing: counted, its count of 0 went away
            return _nothing  # under a larger answer's release, and its own release then failed (KeyError)
        principal, orgs = account.principal, account.orgs
        with self._lock:
            if method in self.reads:
                refused = self._refusal(account)
                if refused is not None:
                    raise refused
            self._held[principal] = self._held.get(principal, 0) + size
            for org in orgs:
                self._orgs[org] = self._orgs.get(org, 0) + size
            self._all += size
        done = [False]

        def release() -> None:
            with self._lock:
                if done[0]:
                    return
                done[0] = True
                _less(self._held, principal, size)
                for org in orgs:
                    _less(self._orgs, org, size)
                self._all -= size

        return release

    def held(self, principal: str) -> int:
        return self._held.get(principal, 0)

    def held_by_org(self, org: str) -> int:
        return self._orgs.get(org, 0)


def _nothing() -> None:
    """The release of an answer that held nothing."""


def _less(counts: dict[str, int], key: str, size: int) -> None:
    left = counts[key] - size
    if left:
        counts[key] = left
    else:
        del counts[key]


def passthrough(data: bytes) -> bytes:
    """The response serializer of a call whose behavior serialized its answer itself (to count it)."""
    return data
