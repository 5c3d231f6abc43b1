"""Applying documents one by one, saying for each what happened.

``apply`` and ``import`` share this. A dry run sends each write as the server's dry run
(``stigmer-dry-run: true``: the whole pipeline, nothing stored), unless the document names an
object only another document of the run, or the server, would make first: then the client's own
checks are all that can run. Each document is looked up first (by id
when it carries one, else by org and slug) so the outcome can be told
apart: created, configured (changed), or unchanged (the server kept the
stored object as it was). A failing document is reported and the rest still
run; only an unreachable server (``Unreachable``) or a caller the server does
not accept (``errors.Unauthenticated``: no token, a bad, revoked or expired
one) stops everything, since every later document would fail the same way.

A document's ``history`` (a skill's earlier versions, which an export writes) is replayed by its
kind's ``import_history`` just before the document's own write, so a re-run that finds it all
there writes nothing and says unchanged; a dry run does not replay it.

An object the server made for its owner while this run created the owner (an
agent's default instance) counts as created, not unchanged, even though it
existed when its own document came up: before the run it did not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import attrs
from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.cli import references
from stigmer_core.cli.calls import KindCalls
from stigmer_core.cli.documents import Document, field_errors
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError, Unreachable
from stigmer_core.cli.session import Session
from stigmer_core.ids import looks_like_id

if TYPE_CHECKING:
    from stigmer_core.cli.catalog import KindInfo

CREATED = "created"
CONFIGURED = "configured"
UNCHANGED = "unchanged"
NEEDED_RPCS = ("getByReference", "apply")
"""What applying a document calls: the lookup that tells created from configured, then the write."""


@attrs.frozen
class Outcome:
    document: Document
    action: str = ""
    error: str = ""
    cause: Exception | None = None
    """The server's refusal behind ``error``, when there is one (``import`` stops on some)."""
    result: Message | None = None
    """The object as stored after the write (None for a dry run or a failure)."""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def details(self) -> list[str]:
        """What ``-v`` adds to the failure's line: the refusal's gRPC status, reason and metadata
        (what a script matches on), as for any other command's."""
        from stigmer_core.cli.errors import status_line

        return [status_line(self.cause)] if isinstance(self.cause, errors.StigmerError) else []


def _existing(calls: KindCalls, doc: Document, message: Message) -> Message | None:
    """The stored object the document names; None when absent or not even nameable
    (an invalid slug: the write itself then reports it against the document's field)."""
    meta = metadata(message)
    try:
        return calls.lookup(meta.org, meta.id or doc.slug)
    except errors.InvalidArgument:
        return None


class _Replay:
    """A history replay's calls, passed through, noting the object its writes made (an answer
    stamped created as it was updated) and each object's latest state they answered."""

    def __init__(self, call: Callable[[str, Message], Message]) -> None:
        self._call = call
        self.made = ""
        self.latest: dict[str, int] = {}

    def __call__(self, method: str, request: Message) -> Message:
        answer = self._call(method, request)
        meta: Any = getattr(answer, "metadata", None)
        if meta is not None and meta.id:
            # a write's answer that was made by it (stamped created as it was updated); a read's may
            # show an object another import just made
            if not self.made and method in ("apply", "create", "push") and _stamped_once(meta):
                self.made = meta.id
            self.latest[meta.id] = getattr(meta, "resource_version", 0)
        return answer


def _stamped_once(meta: Any) -> bool:
    created, updated = getattr(meta, "created_at", None), getattr(meta, "updated_at", None)
    if created is None or updated is None or not (created.seconds or created.nanos):
        return False
    return bool((created.seconds, created.nanos) == (updated.seconds, updated.nanos))


def _undo_replay(calls: KindCalls, doc: Document, message: Message, replay: _Replay) -> str:
    """Delete what a history's replay made of an object absent before, once a later write of it
    was refused (an org's quota, the server's versions per object): it was left with part of its
    history and not the document's own version, and an import run again found it there. Only an
    object this replay made and nobody wrote since: another import of the same file at once may
    have made it, or written to it. What is said of it, for the document's error."""
    found = _existing(calls, doc, message)
    if found is None:
        return ""
    meta = metadata(found)
    if meta.id != replay.made or getattr(meta, "resource_version", 0) != replay.latest.get(meta.id):
        return "; the part of its history written before stays: delete it before importing again"
    try:
        calls.delete(meta.id)
    except errors.StigmerError as exc:
        return f"; the part of its history written before stays ({exc}): delete it before importing again"
    return "; the part of its history written before was deleted"


def _names_planned_id(session: Session, message: Message, planned: Collection[tuple[str, str, str]]) -> bool:
    """Whether the document names, anywhere, the id another document of the run gives its own
    object (an instance naming its agent) and the server has no such object yet, so would not
    find it. Ids carry a ULID, so finding one among the message's bytes is finding the field that
    holds it. An export names its objects by id: restored over what is there, they all exist."""
    own = metadata(message).id
    ids = [(kind, org, name) for kind, org, name in planned if name != own and looks_like_id(name)]
    if not ids:
        return False
    blob = message.SerializeToString()
    for kind_name, org, object_id in ids:
        if object_id.encode() in blob:
            kind = session.catalog.by_name(kind_name)
            if kind is None or session.calls(kind).lookup(org, object_id) is None:
                return True
    return False


class Failed:
    """The ids of a run's documents that failed, so a later one refused NOT_FOUND for naming one
    (an instance naming its agent, a session its instance) is said to follow it: the server's
    "not found" alone read as if the object were missing from the documents."""

    def __init__(self) -> None:
        self._named: dict[str, str] = {}

    def add(self, doc: Document, outcome: Outcome) -> None:
        own = metadata(doc.message).id
        if outcome.failed and own:
            self._named[own] = f"{doc.ref} ({doc.where})"

    def explained(self, doc: Document, outcome: Outcome) -> Outcome:
        """``outcome``, its NOT_FOUND said to follow a failed document ``doc`` names. Ids carry a
        ULID, so finding one among the message's bytes is finding the field that holds it."""
        if not (self._named and outcome.failed and isinstance(outcome.cause, errors.NotFound)):
            return outcome
        message = doc.message
        own = metadata(message).id
        blob = message.SerializeToString()
        for object_id, what in self._named.items():
            if object_id != own and object_id.encode() in blob:
                said = f"{outcome.error} (it names {what}, which failed above)"
                return attrs.evolve(outcome, error=said)
        return outcome


def _validate_locally(doc: Document, message: Message) -> str:
    """Declared field rules, checked here because nothing is sent in a dry run."""
    from stigmer_core.pipeline import validation

    try:
        validation.check(message)
    except errors.InvalidArgument as exc:
        return field_errors(exc, doc.kind.resource_cls)
    except Exception:  # message classes the validator cannot read (e.g. from reflection): the server checks them
        return ""
    return ""


def _undeclared(kind: KindInfo, exc: errors.StigmerError) -> str:
    """Why a slug in a reference field reached the server: the CLI knows the kind only from the
    server, which does not say which fields are references."""
    if kind.declared or not isinstance(exc, errors.InvalidArgument):
        return ""
    if not any("references hold ids" in v.description for v in exc.violations):
        return ""
    return (
        f" (this stigmer could not turn the slug into its id: kind {kind.name}'s plugin is not installed where "
        "it runs, so it cannot tell which fields are references; give the id, or install the kind's package here)"
    )


def _made_meanwhile(after: Message) -> bool:
    """Whether an apply that found nothing before it wrote answered an object another writer had
    made meanwhile: a create stamps one time as both ``created_at`` and ``updated_at``, an update
    a later ``updated_at``. Two imports of one file at once each said "created" of every object."""
    meta = metadata(after)
    created, updated = getattr(meta, "created_at", None), getattr(meta, "updated_at", None)
    if created is None or updated is None or not (created.seconds or created.nanos):
        return False
    return bool((created.seconds, created.nanos) != (updated.seconds, updated.nanos))


def apply_one(
    session: Session,
    doc: Document,
    *,
    dry_run: bool = False,
    created: set[str] | None = None,
    planned: Collection[tuple[str, str, str]] = (),
) -> Outcome:
    """Apply one document; ``created`` collects the ids this run created (pass one set per run);
    ``planned``: what a dry run's documents would create, which references may name."""
    lacking = [rpc for rpc in NEEDED_RPCS if rpc not in doc.kind.methods]
    if lacking:
        missing = " or ".join(map(repr, lacking))
        return Outcome(doc, error=f"kind {doc.kind.name} has no {missing} rpc, which apply and import need")
    calls = session.calls(doc.kind)
    message = doc.message  # parsed once: resolving references changes it
    unresolved: list[str] = []
    taken: list[str] = []
    if dry_run:
        problem = _validate_locally(doc, message)
        if problem:
            return Outcome(doc, error=problem)
    try:
        references.resolve(session, doc, message, planned, unresolved, taken) if dry_run else references.resolve(
            session, doc, message
        )
    except (Unreachable, errors.Unauthenticated):
        raise
    except (CliError, errors.StigmerError) as exc:
        return Outcome(doc, error=str(exc), cause=exc)
    replayed: _Replay | None = None
    before = None
    try:
        before = _existing(calls, doc, message)
        if dry_run and (unresolved or taken or _names_planned_id(session, message, planned)):
            # the server would refuse what names an object not made yet: only the client's checks run
            noted = f"; {'; '.join(unresolved)} now (a real apply needs it made first)" if unresolved else ""
            return Outcome(doc, f"{CREATED if before is None else CONFIGURED} (dry run{noted})")
        if doc.history is not None and doc.kind.import_history is not None and not dry_run:
            replayed = _Replay(calls.call)
            doc.kind.import_history(message, doc.history, replayed)  # the versions before the document's
        # a dry run's answer names what else the write would make (a default instance), which later
        # documents may name as if made: the real apply makes it first
        after = calls.apply(message, dry_run=dry_run, made=planned if isinstance(planned, set) else None)
    except errors.Unauthenticated:
        raise
    except errors.StigmerError as exc:
        said = field_errors(exc, doc.kind.resource_cls) + _undeclared(doc.kind, exc)
        if replayed is not None and before is None:
            said += _undo_replay(calls, doc, message, replayed)
        return Outcome(doc, error=said, cause=exc)
    except Unreachable:
        raise
    except CliError as exc:  # this document's (a kind without the rpcs apply needs): the rest still run
        return Outcome(doc, error=exc.message)
    if dry_run:  # the server ran the whole write and stored nothing: its answer tells the outcome
        return Outcome(doc, f"{CREATED if before is None else UNCHANGED if after == before else CONFIGURED} (dry run)")
    made = created if created is not None else set()
    owners = {ref.id for ref in getattr(metadata(before if before is not None else after), "owner_references", ())}
    if before is None and doc.history is None and _made_meanwhile(after):
        return Outcome(doc, CONFIGURED, result=after)  # another writer made it first (two imports at once)
    if before is None or owners & made:
        made.add(metadata(after).id)
        return Outcome(doc, CREATED, result=after)
    return Outcome(doc, UNCHANGED if after == before else CONFIGURED, result=after)
