"""The execution lifecycle every execution kind shares, as data and steps.

One state machine (``check_transition``) and two step factories
(``update_status``, ``cancel``) serve any kind whose ``status`` has
``phase`` (an ``ExecutionPhase``), ``started_at`` and ``completed_at``
(``google.protobuf.Timestamp`` or an ISO 8601 string): AgentExecution,
WorkflowExecution, or a third party's. The kinds then differ only in which
status fields a runner may report.

When an execution reaches a terminal phase, the secret values of the
ExecutionContext it owns are erased in the same transaction: the runner no
longer needs them, so nothing secret outlives the run. Reaching it is never
refused for size: content is held below ``max_object_bytes`` by the headroom
the lifecycle's own fields need (``headroom``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from stigmer_core import Access, Conflict, FailedPrecondition, PermissionDenied, Phase, RequestContext
from stigmer_core.api.buf.validate import validate_pb2
from stigmer_core.pipeline.step import FunctionStep, Step
from stigmer_plugins import executioncontext, headroom
from stigmer_plugins.phases import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, PENDING, is_terminal, phase_name

_NEXT: dict[int, frozenset[int]] = {
    PENDING: frozenset({PENDING, IN_PROGRESS, FAILED, CANCELLED}),
    IN_PROGRESS: frozenset({IN_PROGRESS, COMPLETED, FAILED, CANCELLED}),
}


def check_transition(current: int, requested: int, *, what: str, about: Mapping[str, object] | None = None) -> None:
    """Refuse a move the lifecycle does not allow, naming both phases.

    Reporting the current phase again is allowed while it is not terminal,
    so a runner can keep appending progress; after a terminal phase every
    report is refused. ``what`` names the execution in the message
    (``"agent execution 'nightly'"``), ``about`` in the refusal's metadata
    (its ``kind`` and ``id``; a task's move has none).
    """
    if requested in _NEXT.get(current, frozenset()):
        return
    metadata = {**(about or {}), "phase": phase_name(current), "requestedPhase": phase_name(requested)}
    if is_terminal(current):
        raise FailedPrecondition(
            f"{what} is {phase_name(current)}, a terminal phase; it cannot move to {phase_name(requested)}",
            reason="RUN_ENDED",
            metadata=metadata,
        )
    raise FailedPrecondition(
        f"{what} cannot move from {phase_name(current)} to {phase_name(requested)}",
        reason="ILLEGAL_TRANSITION",
        metadata=metadata,
    )


def _now() -> Timestamp:
    now = Timestamp()
    now.GetCurrentTime()
    return now


def _stamp(status: Any, field: str, when: Timestamp) -> None:
    """Set a time field once; a Timestamp field or an ISO 8601 string field."""
    current = getattr(status, field)
    if isinstance(current, Timestamp):
        if not status.HasField(field):
            current.CopyFrom(when)
    elif not current:
        setattr(status, field, datetime.fromtimestamp(when.seconds, UTC).isoformat().replace("+00:00", "Z"))


def enter_phase(ctx: RequestContext, execution: Message, phase: int, *, what: str) -> None:
    """Move ``execution`` (a copy being built) to ``phase`` under the lifecycle.

    Stamps ``started_at`` on entering IN_PROGRESS and ``completed_at`` on
    entering a terminal phase, and erases the secrets of the execution's
    context when it ends.
    """
    status: Any = execution.status  # type: ignore[attr-defined]
    about = {"kind": ctx.kind.name, "id": execution.metadata.id}  # type: ignore[attr-defined]
    check_transition(status.phase, phase, what=what, about=about)
    now = _now()
    if phase == IN_PROGRESS:
        _stamp(status, "started_at", now)
    if is_terminal(phase):
        _stamp(status, "completed_at", now)
        executioncontext.seal_owned_contexts(ctx, execution.metadata.id)  # type: ignore[attr-defined]
    status.phase = phase


def _what(ctx: RequestContext, execution: Message) -> str:
    return f"{ctx.kind.label} '{execution.metadata.slug}'"  # type: ignore[attr-defined]


def _about(ctx: RequestContext, execution: Message, **more: object) -> dict[str, object]:
    """The ``ErrorInfo`` metadata of a refusal of a report: the run it is about, and ``more``."""
    return {"kind": ctx.kind.name, "id": execution.metadata.id, **more}  # type: ignore[attr-defined]


def _load(ctx: RequestContext, id_field: str) -> Message:
    return ctx.store.require_id(ctx.kind, str(getattr(ctx.request, id_field)), id_field)


def _persist(ctx: RequestContext, old: Message, new: Message, *, content: bool = False) -> None:
    """Write a report or a cancel. One that adds ``content`` is held to the content limit; one
    that does not (a claim, a heartbeat, an end, a cancel) may use the headroom the lifecycle
    keeps (``headroom``), so a run can always be ended."""
    if new == old:
        ctx.resource = old
        return
    if content:
        headroom.check_content(
            ctx,
            old,
            new,
            write="report",
            advice="report less at a time; a report of only a phase, an error (its message at most "
            f"{headroom.ERROR_KEPT_CHARS:,} characters) or a heartbeat still fits, "
            "so the run can always be ended",
        )
    ctx.store.stamp_update(ctx.kind, new, principal=ctx.principal, part="status")
    ctx.store.replace(ctx.kind, old, new)
    ctx.resource = new


def max_items(field: Any) -> int | None:
    """A repeated field's (a ``FieldDescriptor``) own rule on its length (protovalidate's ``max_items``), if any."""
    extension: Any = validate_pb2.field
    rules: Any = field.GetOptions().Extensions[extension]
    return int(rules.repeated.max_items) if rules.repeated.HasField("max_items") else None


def merge_fields(*, append: Sequence[str] = (), replace: Sequence[str] = ()) -> Callable[[Message, Message], None]:
    """A report merge: repeated fields in ``append`` are appended, fields in
    ``replace`` overwrite the stored value when the report sets them.

    An append that would take a field past its own ``max_items`` is refused
    (FAILED_PRECONDITION) rather than stored: the stored object would then
    fail its rules, and every later update of it (a label, a cancel reason)
    would be refused as invalid.
    """
    limits: dict[str, int | None] = {}

    def merge(report: Message, status: Message) -> None:
        for name in append:
            if name not in limits:  # once per field, on the first report
                limits[name] = max_items(status.DESCRIPTOR.fields_by_name[name])
            stored, added, limit = getattr(status, name), getattr(report, name), limits[name]
            if limit is not None and len(stored) + len(added) > limit:
                raise FailedPrecondition(
                    f"the report adds {len(added)} to the {len(stored)} status.{name} the execution holds; "
                    f"it holds at most {limit}: end the run, or start another",
                    reason="REPORT_LIMIT",
                    metadata={"field": f"status.{name}", "limit": limit},
                )
            stored.extend(added)
        for name in replace:
            field = report.DESCRIPTOR.fields_by_name[name]
            if field.message_type is not None:
                if report.HasField(name):
                    getattr(status, name).CopyFrom(getattr(report, name))
            elif getattr(report, name):
                setattr(status, name, getattr(report, name))

    return merge


def _silent_for(status: Any) -> float:
    """Seconds since the run's runner last reported (its heartbeat, else its start), by this
    daemon's clock: daemons sharing a database need their clocks in step (NTP)."""
    last = None
    for field in ("heartbeat_at", "started_at"):
        if field in status.DESCRIPTOR.fields_by_name:
            value = getattr(status, field)
            if isinstance(value, Timestamp) and status.HasField(field):
                last = value.ToDatetime(tzinfo=UTC)
            elif isinstance(value, str) and value:
                last = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if last.tzinfo is None:  # a time without its zone: taken as UTC, as the server writes them
                    last = last.replace(tzinfo=UTC)
            if last is not None:
                break
    return float("inf") if last is None else (datetime.now(UTC) - last).total_seconds()


def _beat(status: Any) -> None:
    """Note that the runner reported now (a status without ``heartbeat_at`` keeps none)."""
    if "heartbeat_at" not in status.DESCRIPTOR.fields_by_name:
        return
    if isinstance(status.heartbeat_at, Timestamp):
        status.heartbeat_at.CopyFrom(_now())
    else:
        status.heartbeat_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _is_claim(report: Any, runner: str) -> bool:
    """Whether ``report`` is a claim and nothing more: IN_PROGRESS and the runner's name (and its id)."""
    claim = type(report)(phase=IN_PROGRESS, runner=runner)
    if "report_id" in report.DESCRIPTOR.fields_by_name:
        claim.report_id = report.report_id
    return bool(report == claim)


def _claimant(status: Any) -> Any:
    """Where a run records the principal whose claim holds it: its status audit's creator (the
    status is the run's, and its claim is what starts it). None for a status without an audit."""
    if "audit" not in status.DESCRIPTOR.fields_by_name:
        return None
    return status.audit.status_audit


def _check_claimant(ctx: RequestContext, existing: Message, report: Any, runner: str) -> bool:
    """A runner's name is only what its reports say: the claim also records the token's principal,
    and a report naming the runner from another principal is refused, or any runner token of the
    org could read the name (a ``get`` shows it) and report on, or end, the run as that runner.
    True when it is a claim of a silent run under the same name (a runner restarted with another
    token): a takeover, as by another name."""
    recorded = _claimant(existing.status)  # type: ignore[attr-defined]
    if recorded is None or not recorded.created_by.id or ctx.caller.unrestricted:
        return False
    if recorded.created_by.id != ctx.principal:
        status: Any = existing.status  # type: ignore[attr-defined]
        lease = ctx.registry.limits.run_lease_seconds
        silent = _silent_for(status)
        if status.phase == IN_PROGRESS and _is_claim(report, runner) and silent > lease:
            return True
        heard = "never heard from" if silent == float("inf") else f"last heard {silent:.0f} s ago"
        raise FailedPrecondition(
            f"{_what(ctx, existing)} is run by runner '{runner}' as claimed by {recorded.created_by.id} "
            f"({heard}): a report naming that runner must come with the token that claimed it (this one is "
            f"{ctx.principal}) until the run lease runs out; after {lease} s without a report "
            "(STIGMER_RUN_LEASE_SECONDS), a claim with another token takes it over",
            reason="RUN_HELD_BY_ANOTHER_TOKEN",
            metadata=_about(
                ctx,
                existing,
                runner=runner,
                claimedBy=recorded.created_by.id,
                leaseSeconds=lease,
                silentSeconds="" if silent == float("inf") else int(silent),  # "": never heard from, left out
            ),
        )
    return False


def _record_claimant(ctx: RequestContext, status: Any) -> None:
    recorded = _claimant(status)
    if recorded is not None:
        recorded.created_by.id = ctx.principal
        recorded.created_at.CopyFrom(_now())


def _check_takeover(ctx: RequestContext, existing: Message, report: Any, runner: str, holder: str) -> None:
    """Refuse ``runner``'s report on a run another runner holds, unless it is a claim of a run
    that has been silent longer than the run lease: then it is taken over."""
    if not holder:  # its runner's reports carry no heartbeat: it is never silent, only ended by a cancel
        raise FailedPrecondition(
            f"{_what(ctx, existing)} was claimed by a runner that gave no name, so it cannot be taken over "
            f"(an editor can cancel it); a report naming runner '{runner}' is refused",
            reason="RUN_HELD_UNNAMED",
            metadata=_about(ctx, existing),
        )
    lease = ctx.registry.limits.run_lease_seconds
    silent = _silent_for(existing.status)  # type: ignore[attr-defined]
    if _is_claim(report, runner) and silent > lease:
        return
    heard = "never heard from" if silent == float("inf") else f"last heard {silent:.0f} s ago"
    raise FailedPrecondition(
        f"{_what(ctx, existing)} is run by runner '{holder}' ({heard}; another runner may claim it after "
        f"{lease} s without a report, STIGMER_RUN_LEASE_SECONDS); a report naming runner '{runner}' is refused",
        reason="RUN_HELD_BY_ANOTHER_RUNNER",
        metadata=_about(
            ctx,
            existing,
            runner=holder,
            leaseSeconds=lease,
            silentSeconds="" if silent == float("inf") else int(silent),  # "": never heard from, left out
        ),
    )


_UNCLAIMED_REPORT_FIELDS = frozenset({"phase", "runner", "report_id"})


def _check_unclaimed_report(ctx: RequestContext, existing: Message, report: Any, phase: int) -> None:
    """A report on a PENDING run that does not claim it sets nothing on it but its end: messages,
    tasks, output or usage are a claimed run's (the claim records the token that may send them),
    else any token with report access could write into a run it never claimed, and ending it
    as FAILED would keep what it wrote. An end may say why (``error``). Runs after the merge,
    so a kind's own refusal (a task that may not move yet) is the one a runner reads."""
    allowed = _UNCLAIMED_REPORT_FIELDS if phase == PENDING else _UNCLAIMED_REPORT_FIELDS | {"error"}
    extra = sorted(field.name for field, _ in report.ListFields() if field.name not in allowed)
    if extra:
        raise FailedPrecondition(
            f"{_what(ctx, existing)} is {phase_name(PENDING)}: a report sets {', '.join(extra)} on a run only once a "
            f"runner has claimed it (phase {phase_name(IN_PROGRESS)}, in this report or before); a report that ends "
            f"it unclaimed ({phase_name(FAILED)}) may carry only its error",
            reason="RUN_NOT_CLAIMED",
            metadata=_about(ctx, existing, fields=",".join(extra)),
        )


def _check_may_cancel(ctx: RequestContext, existing: Message) -> None:
    """A report may end a PENDING run it never claimed as FAILED (a runner that cannot run it says
    so), but cancelling one is the cancel rpc's, an editor's (docs/security.md): a runner token
    must not do through a report what its role does not allow."""
    org = existing.metadata.org  # type: ignore[attr-defined]
    if ctx.caller.can(Access.WRITE, org):
        return
    role = ctx.caller.roles.get(org, "")
    raise PermissionDenied(
        f"{ctx.principal} is {role} in org '{org}', which does not allow write access: {_what(ctx, existing)} "
        f"is PENDING, and a report cannot cancel it (an editor's cancel does); a runner that will not run it "
        f"reports {phase_name(FAILED)}, or claims it first",
        metadata=_about(ctx, existing, org=org, role=role, access=Access.WRITE.value),
    )


def _held_by_caller(ctx: RequestContext, existing: Message, runner: str, given: int, stored: int) -> Conflict:
    """A report at a stale version from the run's own runner (its token checked before): most
    often its claim carrying a first message or task, sent again after its answer was lost. Not
    RUN_CLAIMED, which tells a runner to drop the run: the run is the caller's already."""
    return Conflict(
        f"{_what(ctx, existing)} is already claimed by this runner ('{runner}'): resource_version {given} is "
        f"stale (current: {stored}): written since, by this runner's own reports among others; re-read the run "
        "and go on from its current "
        "version, sending again only what it does not show (a report_id on every report, the claim "
        "included, makes such a retry answered, not refused)",
        reason="RUN_HELD_BY_CALLER",
        metadata=_about(ctx, existing, runner=runner, resourceVersion=given, currentResourceVersion=stored),
    )


def _ended(what: str, phase: int) -> str:
    """Why a report on an ended run is refused: the run ended, whatever the report asked for (a
    runner's heartbeat after a cancel asks for no phase at all)."""
    how = "was cancelled" if phase == CANCELLED else "has ended"
    return f"{what} {how} (it is {phase_name(phase)}, a terminal phase) and takes no more reports"


def _recent_ids(status: Any) -> list[str]:
    """The ids of the run's latest applied reports; a status stored before it kept a window, or a
    kind's status without one, has only its last (``report_id``)."""
    if "recent_report_ids" in status.DESCRIPTOR.fields_by_name and status.recent_report_ids:
        return list(status.recent_report_ids)
    last = str(getattr(status, "report_id", ""))
    return [last] if last else []


def _note_report(status: Any, report_id: str, *, restart: bool, window: int) -> None:
    """Record an applied report's id: ``report_id`` the latest, ``recent_report_ids`` the last
    ``window`` of them. A report without an id (a heartbeat) changes neither, or a retry after it
    would be applied again. A claim or a takeover starts again: ids are one runner's own, and the
    new runner's may repeat the old one's."""
    fields = status.DESCRIPTOR.fields_by_name
    if "report_id" not in fields:
        return
    kept = [] if restart else _recent_ids(status)
    if report_id:
        kept = [*(i for i in kept if i != report_id), report_id]
    status.report_id = kept[-1] if kept else ""
    if "recent_report_ids" in fields:
        status.recent_report_ids[:] = kept[-window:]


def update_status(
    *,
    merge: Callable[[Message, Message], None],
    id_field: str = "execution_id",
    status_field: str = "status",
) -> Step:
    """The transactional step of an ``updateStatus`` rpc: apply a runner's report.

    The request carries the execution id in ``id_field`` and the report in
    ``status_field``. The report's phase (unset: unchanged) is checked
    against the lifecycle, then ``merge(report, status)`` copies what a
    runner may report; every other status field (times, audit, server-set
    ids) stays as stored. A report that changes nothing writes nothing (one
    naming its runner always changes its heartbeat).
    A non-zero ``resource_version`` in the request (when its message has
    one) must be the stored one, else ABORTED: how a runner claims a
    PENDING execution it saw in a watch without racing another runner.

    When the status has a ``runner`` field, a report may name its runner:
    the claim records it, and every report naming it stamps ``heartbeat_at``.
    The same claim again from that runner (just the IN_PROGRESS phase and
    its name, with the version it claimed at, now stale, since its answer
    was lost) is taken as a heartbeat, not ABORTED, so a runner never drops a
    run it holds; so is a report carrying a ``report_id`` among the run's
    ``recent_report_ids`` (the ids of its latest applied reports, at most
    ``Limits.report_id_window``; a report without one, a heartbeat, keeps
    them) from that runner, or from any runner on a run claimed without a
    name: a retry after a lost answer, not applied twice. A report naming another runner than the one recorded
    is refused (FAILED_PRECONDITION), unless it is a claim of a run whose
    runner has been silent longer than the run lease
    (``Limits.run_lease_seconds``): then the run is taken over, and the old
    runner's named reports are refused. A run claimed without a name is
    never taken over, and its reports need name no runner; a run claimed
    with a name refuses reports naming none (FAILED_PRECONDITION). A named
    claim records the claiming principal in ``status.audit.status_audit``
    (``created_by``, ``created_at``), and a report naming the runner from
    another principal is refused: the name alone is no credential. A report
    at a stale version from the run's own runner and token (its claim with a
    first message, retried) is told the run is its own (RUN_HELD_BY_CALLER),
    not RUN_CLAIMED, which would have it drop the run. A report moving a
    PENDING run to CANCELLED needs the cancel's access (an editor's). A report
    carrying content is held to the content limit; one of the lifecycle's
    fields alone may use the headroom (``headroom``), so a run can always end.
    Follow it with the standard ``publish``, ``redact`` and ``respond``.
    """

    def run(ctx: RequestContext) -> None:
        existing = _load(ctx, id_field)
        report: Any = getattr(ctx.request, status_field)
        status: Any = existing.status  # type: ignore[attr-defined]
        runner = str(getattr(report, "runner", ""))  # "" also for a kind whose status names no runner
        holder = str(getattr(status, "runner", ""))
        taken_back = bool(runner) and runner == holder and _check_claimant(ctx, existing, report, runner)
        report_id = str(getattr(report, "report_id", ""))
        expected = getattr(ctx.request, "resource_version", 0)
        stored = getattr(existing.metadata, "resource_version", 0)  # type: ignore[attr-defined]
        # Sent again after a lost answer, by the run's own runner (or, on a run claimed without a
        # name, by any runner): a report applied lately, or this runner's claim (its version stale
        # since it landed). Not applied twice.
        again = (
            runner == holder
            and not taken_back
            and (
                (bool(report_id) and report_id in _recent_ids(status))
                or (
                    bool(runner)
                    and bool(expected)
                    and expected != stored
                    and status.phase == IN_PROGRESS
                    and _is_claim(report, runner)
                )
            )
        )
        if not again:
            if is_terminal(status.phase):  # before the version: "re-read and retry" would not help
                raise FailedPrecondition(
                    _ended(_what(ctx, existing), status.phase),
                    reason="RUN_ENDED",
                    metadata=_about(ctx, existing, phase=phase_name(status.phase)),
                )
            own = bool(runner) and runner == holder and not taken_back and status.phase == IN_PROGRESS
            if expected and expected < stored and own:
                raise _held_by_caller(ctx, existing, runner, expected, stored)
            if expected and expected != stored:
                raise Conflict.version(
                    _what(ctx, existing),
                    expected,
                    stored,
                    kind=ctx.kind.name,
                    object_id=existing.metadata.id,  # type: ignore[attr-defined]
                    runner=holder if status.phase == IN_PROGRESS else "",
                )
            if runner and runner != holder and status.phase == IN_PROGRESS:
                _check_takeover(ctx, existing, report, runner, holder)
            if status.phase == PENDING and report.phase == CANCELLED:
                _check_may_cancel(ctx, existing)
            if runner and status.phase == PENDING and (report.phase or PENDING) == PENDING:
                raise FailedPrecondition(  # else a mistyped phase (read as unset) looks like a claim that held
                    f"{_what(ctx, existing)} is PENDING: runner '{runner}' claims it by reporting "
                    f"phase {phase_name(IN_PROGRESS)}",
                    reason="RUN_NOT_CLAIMED",
                    metadata=_about(ctx, existing),
                )
            if holder and not runner and status.phase == IN_PROGRESS:  # or any runner token could report on it
                raise FailedPrecondition(
                    f"{_what(ctx, existing)} is run by runner '{holder}': a report on it must name that "
                    "runner (status.runner); an editor can cancel it",
                    reason="RUNNER_REQUIRED",
                    metadata=_about(ctx, existing, runner=holder),
                )
        new = ctx.kind.resource_cls()
        new.CopyFrom(existing)
        current = status.phase
        if not again:  # an ended run was refused above, even for a report repeating its phase or carrying none
            if report.phase and report.phase != current:
                enter_phase(ctx, new, report.phase, what=_what(ctx, existing))
            merge(report, new.status)  # type: ignore[attr-defined]
            if current == PENDING and new.status.phase != IN_PROGRESS:  # type: ignore[attr-defined]
                _check_unclaimed_report(ctx, existing, report, new.status.phase)  # type: ignore[attr-defined]
            claimed = bool(runner) and (runner != holder or taken_back)
            if claimed:  # a claim, or a takeover: this principal's now
                _record_claimant(ctx, new.status)  # type: ignore[attr-defined]
            if runner:
                new.status.runner = runner  # type: ignore[attr-defined]
            _note_report(new.status, report_id, restart=claimed, window=ctx.registry.limits.report_id_window)  # type: ignore[attr-defined]
        if runner and runner == holder and not taken_back:
            recorded = _claimant(new.status)  # type: ignore[attr-defined]
            if recorded is not None and not recorded.created_by.id:  # claimed before claims recorded one
                _record_claimant(ctx, new.status)  # type: ignore[attr-defined]  # its runner's first report
        if runner and not is_terminal(new.status.phase):  # type: ignore[attr-defined]
            _beat(new.status)  # type: ignore[attr-defined]  # any report the run's runner sends
        ctx.existing = existing
        _persist(ctx, existing, new, content=not again and headroom.carries_content(report))

    return FunctionStep("update_execution_status", Phase.PERSIST, run)


def cancel(
    *,
    id_field: str = "value",
    on_cancel: Callable[[RequestContext, Message], None] | None = None,
) -> Step:
    """The transactional step of a ``cancel`` rpc.

    Moves a PENDING or IN_PROGRESS execution to CANCELLED. Cancelling an
    execution that is already CANCELLED returns it unchanged, so a client
    may retry a cancel whose answer it lost; a COMPLETED or FAILED one is
    refused. ``on_cancel(ctx, execution)`` may record more (a reason) on
    the copy being written. Follow it with ``publish``, ``redact``,
    ``respond``.
    """

    def run(ctx: RequestContext) -> None:
        existing = _load(ctx, id_field)
        ctx.existing = existing
        if existing.status.phase == CANCELLED:  # type: ignore[attr-defined]
            ctx.resource = existing
            return
        new = ctx.kind.resource_cls()
        new.CopyFrom(existing)
        enter_phase(ctx, new, CANCELLED, what=_what(ctx, existing))
        if on_cancel is not None:
            on_cancel(ctx, new)
        _persist(ctx, existing, new)

    return FunctionStep("cancel_execution", Phase.PERSIST, run)


def live(execution: Message) -> bool:
    """For ``Reference(..., live=live)``: a non-terminal execution blocks deletes."""
    return not is_terminal(execution.status.phase)  # type: ignore[attr-defined]


def ended(execution: Message) -> bool:
    """For ``watch_object(until=ended)``: a subscription ends after the terminal state."""
    return is_terminal(execution.status.phase)  # type: ignore[attr-defined]
