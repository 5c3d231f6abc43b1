"""Removing an org from a store: every object of it, then its history in the event log.

Orgs exist only in what is stored (objects, API tokens and the event log), so
an org is removed by deleting what it holds. Each object goes through its
kind's own delete, as a local administrator's call in this process: the
kind's steps run (a run's key is shredded, an owner takes what it owns with
it), and a third-party kind is removed the same way. A delete that another
object blocks (a live run holding its agent, an agent naming an environment)
waits for the next pass; live runs are cancelled first, through their kind's
``cancel``. Only once nothing of the org is left is its partition of the
event log forgotten (``WriteTxn.forget_partition``): the events of its
deleted objects stayed readable, with their content, to a watch of the org
from an old revision until retention dropped them, so an org name given to
another team showed it the first team's history.

The org's API tokens go first. A daemon serving the same database (a team
server's) takes a token it checked for its cache's few seconds: its holder
wrote into the org after the command said it was removed. So the command
waits that long after deleting them, before anything else, when daemons may
be serving. And objects of a kind whose plugin is not installed here cannot
be listed: the org's usage counter, which counts them, must come to zero
before its events are forgotten. It is read in the transaction that forgets
them, so an object a daemon wrote since the last look is deleted in another
round rather than left with its history gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import grpc

from stigmer_core import errors
from stigmer_core.application import Application
from stigmer_core.auth.tokens import KIND as TOKEN_KIND
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds import usage
from stigmer_core.kinds.runtime import KindRuntime, MethodBinding
from stigmer_core.status import from_rpc_error
from stigmer_core.store import keys

CANCEL_REASON = "the org was removed"

_PASSED_OVER = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
"""A delete or cancel answered so is tried again next pass, or was done already (by a cascade)."""


@attrs.frozen
class Removal:
    """What removing an org did, kind by kind."""

    deleted: dict[str, int]
    """Objects of each kind the org held before, less those left."""
    left: dict[str, list[str]]
    """Per kind, the objects still held and why (empty: the org is gone)."""
    forgotten: int
    """Revisions of the event log forgotten (0 while anything is left)."""


def _operations(kind: KindRuntime) -> dict[str, MethodBinding]:
    return {binding.operation: binding for binding in kind.methods.values()}


def _clients(app: Application) -> list[tuple[KindRuntime, KindClient]]:
    channel = app.channel()
    return [(kind, KindClient(channel, kind)) for kind in app.registry.kinds if "list" in _operations(kind)]


def held(client: KindClient, kind: KindRuntime, org: str) -> Iterator[Any]:
    """The org's objects of ``kind``, page by page (a list without an org field lists every org's)."""
    if kind.list_shape.has_org:
        yield from client.list_all(org=org, page_size=500)
        return
    for found in client.list_all(page_size=500):
        if found.metadata.org == org:  # type: ignore[attr-defined]
            yield found


UNINSTALLED = "(kinds not installed here)"
"""Where ``count`` puts the objects the org's usage counter counts and no installed kind lists."""


def count(app: Application, org: str) -> dict[str, int]:
    """Objects of each kind ``org`` holds (kinds holding none left out), and under ``UNINSTALLED``
    those of kinds whose plugin is not installed here: a dry run left them out, and the run then
    stopped on them."""
    try:
        found = {kind.name: sum(1 for _ in held(client, kind, org)) for kind, client in _clients(app)}
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    with app.store.read() as txn:
        counted, _ = usage.decode(txn.get(keys.org_usage_key(org)))
    unseen = counted - sum(found.values())
    if unseen > 0:
        found[UNINSTALLED] = unseen
    return {name: number for name, number in found.items() if number}


def _cancel_runs(clients: list[tuple[KindRuntime, KindClient]], org: str) -> None:
    for kind, client in clients:
        binding = _operations(kind).get("cancel")
        if binding is None or "id" not in binding.request_cls.DESCRIPTOR.fields_by_name:
            continue
        request_cls: Any = binding.request_cls
        has_reason = "reason" in request_cls.DESCRIPTOR.fields_by_name
        for found in list(held(client, kind, org)):
            request = request_cls(id=found.metadata.id)
            if has_reason:
                request.reason = CANCEL_REASON
            try:
                client.call("cancel", request)
            except grpc.RpcError as exc:  # ended already, or gone with its owner
                if exc.code() not in _PASSED_OVER:
                    raise


def _delete_all(clients: list[tuple[KindRuntime, KindClient]], org: str, blocked: dict[str, list[str]]) -> set[str]:
    """One pass of deletes over ``clients``' kinds; the kinds of which any went (the refused
    in ``blocked``)."""
    went: set[str] = set()
    for kind, client in clients:
        if "delete" not in _operations(kind):
            continue
        for found in list(held(client, kind, org)):
            try:
                client.delete(found.metadata.id)
                went.add(kind.name)
            except grpc.RpcError as exc:
                if exc.code() not in _PASSED_OVER:
                    raise
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    blocked.setdefault(kind.name, []).append(f"{found.metadata.slug}: {exc.details()}")
    return went


ROUNDS = 5
"""Rounds of deletes a removal goes, each ended by a look at the org's usage counter in the
transaction that forgets its events: a round that finds it still counting objects (a write of
a daemon came in meanwhile) is followed by another, up to this many."""


def _delete_rounds(
    clients: list[tuple[KindRuntime, KindClient]], org: str, tokens_settle: float, sleep: Callable[[float], None]
) -> dict[str, list[str]]:
    """Passes of deletes until one deletes nothing; the deletes refused in the last one, by kind.

    An API token refused at first (it owned an object something else still named) goes in a
    later pass: its holder may write until daemons' caches let go of it, so once a pass has
    deleted one, the passes are gone through again after the wait."""
    while True:
        late_token = False
        while True:
            blocked: dict[str, list[str]] = {}
            went = _delete_all(clients, org, blocked)
            if not went:
                break
            late_token = late_token or TOKEN_KIND in went
        if not (late_token and tokens_settle > 0):
            return blocked
        sleep(tokens_settle)


def _left(
    clients: list[tuple[KindRuntime, KindClient]], org: str, blocked: dict[str, list[str]]
) -> dict[str, list[str]]:
    left: dict[str, list[str]] = {}
    for kind, client in clients:
        for found in held(client, kind, org):
            reasons = [why for why in blocked.get(kind.name, ()) if why.startswith(f"{found.metadata.slug}: ")]
            left.setdefault(kind.name, []).append(reasons[0] if reasons else f"{found.metadata.slug}: no delete")
    return left


def _forget_if_empty(org: str) -> Callable[[Any], int | None]:
    """The forget, in a transaction that first reads the org's usage counter: None (nothing
    forgotten) while it counts objects, whether written since the last look or of a kind no
    installed plugin lists."""

    def forget(txn: Any) -> int | None:
        counted, _ = usage.decode(txn.get(keys.org_usage_key(org)))
        return None if counted else int(txn.forget_partition(org))

    return forget


def remove_org(
    app: Application, org: str, *, tokens_settle: float = 0.0, sleep: Callable[[float], None] = time.sleep
) -> Removal:
    """Delete every object of ``org`` through its kind's delete, then forget its history.

    ``tokens_settle``: seconds to wait after deleting the org's API tokens, for daemons serving
    the same store to stop taking them (their token cache's; 0 when none can be serving).

    A failure part way (the database went away) is raised as the ``StigmerError`` it stands for:
    what was deleted stays deleted, the org's events are kept, and running it again finishes."""
    if not org:
        raise errors.InvalidArgument("no org named: an empty org lists every org's objects")
    try:
        return _remove(app, org, tokens_settle, sleep)
    except grpc.RpcError as exc:  # a call of this process's channel: said as the error it stands for
        raise from_rpc_error(exc) from None


def _remove(app: Application, org: str, tokens_settle: float, sleep: Callable[[float], None]) -> Removal:
    clients = _clients(app)
    before = count(app, org)
    tokens = [(kind, client) for kind, client in clients if kind.name == TOKEN_KIND]
    if _delete_all(tokens, org, {}) and tokens_settle > 0:
        sleep(tokens_settle)
    _cancel_runs(clients, org)
    left: dict[str, list[str]] = {}
    forgotten = 0
    for _ in range(ROUNDS):
        left = _left(clients, org, _delete_rounds(clients, org, tokens_settle, sleep))
        if left:
            break
        done = app.store.transact(_forget_if_empty(org))
        if done is not None:
            forgotten = done
            break
        if not _left(clients, org, {}):  # nothing here lists what the counter counts
            with app.store.read() as txn:
                unseen, _ = usage.decode(txn.get(keys.org_usage_key(org)))
            left[UNINSTALLED] = [
                f"{unseen} objects the org's usage counter counts that no installed kind lists: install every "
                "kind's plugin where this runs (or repair the counter with `stigmer doctor --repair`), then run again"
            ]
            break
    else:
        left["(written meanwhile)"] = [
            f"objects of the org were written while it was being removed, through {ROUNDS} rounds of deletes: "
            "stop what writes into it, then run again"
        ]
    before.pop(UNINSTALLED, None)  # told in ``left`` when still there
    deleted = {name: number - len(left.get(name, ())) for name, number in before.items()}
    return Removal(deleted={name: n for name, n in deleted.items() if n}, left=left, forgotten=forgotten)
