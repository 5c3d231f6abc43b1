"""``stigmer export`` and ``stigmer import``: backups as YAML documents.

See ``stigmer_core.cli.backup`` for what an export contains and why.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import click

from stigmer_core.cli import completing
from stigmer_core.cli.errors import CliError, Unreachable
from stigmer_core.cli.options import common_options, overrides, valid_org
from stigmer_core.cli.words import counted

WITHOUT_KEY = (
    "exporting without secret values (an export never holds them); import the export into a fresh data "
    "directory and apply the secrets again, or restore the key"
)
"""Said after the key's problem when the store is exported read-only (``Session``)."""


@click.command()
@click.argument("kind_names", nargs=-1, metavar="[KIND]...", shell_complete=completing.kinds)
@click.option("--all", "all_kinds", is_flag=True, help="Every exported kind, in every org (unless --org is given).")
@click.option("-A", "--all-orgs", is_flag=True, help="Every org, not just --org (implied by --all).")
@common_options
@click.pass_context
def export(ctx: click.Context, kind_names: tuple[str, ...], all_kinds: bool, all_orgs: bool) -> None:
    """Write objects as YAML documents to stdout (`stigmer export --all > backup.yaml`).

    `--all` is a backup: every exported kind in every org the caller may read.
    Kinds declared with exported=False (run-time records such as executions)
    are left out; naming one is an error. Whatever could not be exported (a
    kind that failed to list, stored objects of a kind no plugin serves) is
    named on stderr and the exit code is 1; the output then has no last line
    that closes it, so `stigmer import` refuses it as incomplete.

    A local store whose secret key is lost (or another one is given) is still
    exported, read-only: an export never holds secret values anyway. It says
    so once on stderr; the exit code is 0 when everything was exported.
    """
    from stigmer_core.cli import backup
    from stigmer_core.cli.reporting import report_failure
    from stigmer_core.cli.session import Session

    if not kind_names and not all_kinds:
        raise CliError("name the kinds to export, or pass --all", exit_code=2)
    if kind_names and all_kinds:
        raise CliError("give either --all or kinds, not both", exit_code=2)
    session = Session.of(ctx, read_only=WITHOUT_KEY, needs_store="export")
    every_org = all_orgs or (all_kinds and overrides(ctx).org is None)
    kinds = backup.exportable(session.catalog, kind_names)
    session.refuse_no_store()  # here, not as each kind is listed: said once, with nothing written
    # before anything opens the store in this process: LMDB opens an environment once per process
    missing = backup.unserved(session) if all_kinds else []
    session.client  # noqa: B018 - a store this command cannot reach is said once here, not once per kind
    with backup.collect(session, kinds, org="" if every_org else session.org) as export:
        missing = export.missing + missing
        export.write(sys.stdout, session.catalog, failed=missing)  # failed: no last line that closes it
    sys.stdout.flush()
    where = _every_org(session) if every_org else f"org '{session.org}'"
    listed = len(kinds) - len(export.unlisted)
    of_kinds = counted(len(kinds), "kind") if not export.unlisted else f"{listed} of {counted(len(kinds), 'kind')}"
    click.echo(f"exported {counted(len(export.entries), 'object')} of {of_kinds} from {where}", err=True)
    if session.settings.backend != "local" and all_kinds:
        click.echo(
            "note: a remote server lists only the kinds it serves; objects it stores for kinds it no longer "
            "serves cannot be seen from here",
            err=True,
        )
    left_out = _held_but_not_exported(session, "" if every_org else session.org) if all_kinds else []
    if left_out:  # run-time records and credentials: a backup restored without them is whole, but say so
        click.echo(
            f"note: not exported, by their kinds' declarations (run-time records, credentials): {', '.join(left_out)}",
            err=True,
        )
    for note in export.notes:
        click.echo(f"note: {note}", err=True)
    from stigmer_core.cli.app import with_org_hint

    for item in missing:
        report_failure(f"not exported: {item.what}: {with_org_hint(ctx, item.reason)}")
    if missing:
        ctx.exit(1)
    if not every_org and not export.entries and not left_out:
        _nothing_from(ctx, session)


def _nothing_from(ctx: click.Context, session: Any) -> None:
    """An export of one org that found nothing: a mistyped --org, or the config's org where another
    was meant, made an empty backup that imports, exit 0, where a server refuses an org it does not
    know. In process the store tells an org it holds nothing of: refused so; else said."""
    from stigmer_core.kinds import usage

    org = session.org
    source = "" if overrides(ctx).org is not None else " (the org comes from the config file or $STIGMER_ORG)"
    app = getattr(session.client, "_app", None)  # an in-process store: its orgs are known
    if app is not None:
        with app.store.read() as txn:
            held = sorted(usage.stored(txn))
        if org not in held:
            orgs = ", ".join(repr(name) for name in held) or "none"
            raise CliError(
                f"org '{org}' holds nothing in this store{source}: the backup written holds no object; "
                f"orgs here: {orgs}; give --org ORG, or -A for every org"
            )
    click.echo(f"note: org '{org}' holds no object this export could read{source}; give --org ORG, or -A", err=True)


def _held_but_not_exported(session: Any, org: str) -> list[str]:
    """The kinds declared ``exported=False`` that hold objects the caller may read: one object
    asked of each (a store without runs is told nothing), and a kind that cannot be listed (a
    role that may not read tokens) left unnamed."""
    import grpc

    from stigmer_core import errors

    held = []
    allowed = _accesses(session)
    for kind in session.catalog.kinds:
        if kind.exported:
            continue
        needed = kind.methods["list"].access if "list" in kind.methods else ""
        if allowed is not None and needed and needed not in allowed:
            continue  # its list would be refused, and logged on the server as a denial: not asked
        try:
            found = next(session.calls(kind).iterate(org=org, limit=1), None)
        except (errors.StigmerError, grpc.RpcError, CliError):
            continue
        if found is not None:
            held.append(kind.plural)
    return sorted(held)


OWNERS_DROPPED_SHOWN = 5
"""Documents imported without an owner of a kind never exported that are named one by one."""


def _unexported_owner(session: Any, document: Any, outcome: Any) -> tuple[str, Any] | None:
    """When ``outcome`` is the refusal of an owner reference naming an object of a kind that no
    export carries (an API token, an execution) and that is not in this store: what to say, and
    the document without that reference, to apply again. Such an object exported from one store
    could never be imported into another. None when the refusal is anything else (an owner of an
    exported kind left out of the export is the export's to say)."""
    from stigmer_core import errors
    from stigmer_core.cli.documents import Document
    from stigmer_core.cli.envelope import metadata

    cause = outcome.cause
    if not isinstance(cause, errors.NotFound):
        return None
    field = cause.metadata.get("field", "")
    owner = session.catalog.find(cause.metadata.get("kind", ""))
    if owner is None or owner.exported or not field.startswith("metadata.owner_references["):
        return None
    try:
        at = int(field[len("metadata.owner_references[") : -1])
    except ValueError:
        return None
    message = document.message
    refs = metadata(message).owner_references
    if not 0 <= at < len(refs) or refs[at].id != cause.metadata.get("id"):
        return None
    gone = refs[at].id
    del refs[at]
    said = (
        f"imported without its owner {owner.name} {gone} ({field}), which is not in this store, and "
        f"{owner.plural} are never exported: it is no longer deleted with that owner"
    )
    return said, Document.of(document.source, document.index, document.kind, message, document.history)


def _accesses(session: Any) -> frozenset[str] | None:
    """What the caller's roles allow in some org (``read``, ``write``…); None when it may do
    anything, or when the server does not say (no whoami)."""
    from stigmer_core import errors
    from stigmer_core.auth.roles import ROLES
    from stigmer_core.cli.identity import whoami_of

    try:
        identity = whoami_of(session.client.channel, session.target)
    except (CliError, errors.StigmerError):
        return None
    if identity.administrator:
        return None
    return frozenset(access.value for b in identity.roles for access in ROLES.get(b.role, ()))


def _every_org(session: Any) -> str:
    """What "every org" was for this caller: all of them for the administrator, the orgs it
    has a role in for a token (a single-org token exports one org, and says so)."""
    from stigmer_core import errors
    from stigmer_core.cli.identity import whoami_of

    try:
        identity = whoami_of(session.client.channel, session.target)
    except (CliError, errors.StigmerError):  # a server without whoami: the caller is not known
        return "every org"
    orgs = sorted({b.org for b in identity.roles})
    if identity.administrator or not orgs:
        return "every org"
    named = ", ".join(f"'{org}'" for org in orgs)
    return f"{'org' if len(orgs) == 1 else 'orgs'} {named} (every org this caller can read)"


def _unset_secrets(obj: Any) -> list[str]:
    """What a kind's status lists as secrets without a value: every repeated ``status.unset_secret*``
    field (an environment's ``unset_secrets``, an agent's ``unset_secret_headers``)."""
    if obj is None or "status" not in obj.DESCRIPTOR.fields_by_name:
        return []
    status = obj.status
    return [
        str(key)
        for field in status.DESCRIPTOR.fields
        if field.name.startswith("unset_secret") and field.type == field.TYPE_STRING
        for key in getattr(status, field.name)
    ]


def _valid_org(org: str) -> str:
    return valid_org(org, "--to-org")


def _stopped(reason: str, written: int, total: int) -> str:
    return f"{reason}; import stopped: {written} of {total} resources were imported before it"


def _writes_in(session: Any, org: str) -> bool:
    """Whether the caller's role in ``org`` allows writes (else every document there is refused)."""
    from stigmer_core.auth.access import ROLES, Access
    from stigmer_core.cli.identity import whoami_of

    identity = whoami_of(session.client.channel, session.target)
    if identity.administrator:
        return True
    role = next((b.role for b in identity.roles if b.org == org), None)
    return role is not None and Access.WRITE in ROLES.get(role, frozenset())


@click.command("import")
@click.option(
    "-f", "--filename", "files", multiple=True, metavar="PATH", shell_complete=completing.files,
    help="File or directory to read instead of stdin (repeatable).",
)  # fmt: skip
@click.option(
    "--to-org", metavar="ORG",
    help="Put every document in ORG, whatever org it names (a local export moved to a team server's org).",
)  # fmt: skip
@click.option(
    "--new-ids", is_flag=True,
    help="Find each object by org and slug, create the missing ones under new ids, and point the ids naming "
    "them at the copies (an org copied into another of the same server).",
)  # fmt: skip
@common_options
@click.pass_context
def import_(ctx: click.Context, files: tuple[str, ...], to_org: str | None, new_ids: bool) -> None:
    """Restore exported documents (`stigmer import < backup.yaml`).

    Ids and slugs are kept; importing the same documents again changes nothing.
    Secrets a backup holds redacted come back unset: each object left with
    unset secrets is named, with their keys.

    `--to-org ORG` rewrites metadata.org of every document to ORG, and the org
    of every reference naming the document's own org: a local export (org
    'local') goes into a team server's org so. Documents of several orgs are
    refused with it (they would merge into one): export one org and import that.

    `--new-ids` leaves each document's id out: an object is found by its org
    and slug, one that is missing is created under a new id, and the ids that
    named the originals name the copies. An org is copied into another org of
    the same server so (`--to-org staging --new-ids`); without it, an id
    another org's object holds is refused.

    An unreachable server, a server whose store does not serve (UNAVAILABLE: its
    database unreachable or read-only), a token it does not accept (or none
    where it asks for one), or a role that allows no writes in a document's org
    stops the import at once, with one message: every later document would fail
    the same way.
    """
    from stigmer_core import errors
    from stigmer_core.cli.applying import Failed, apply_one
    from stigmer_core.cli.backup import check_whole
    from stigmer_core.cli.documents import STDIN, in_apply_order, parse, read_sources
    from stigmer_core.cli.envelope import metadata
    from stigmer_core.cli.moving import one_org
    from stigmer_core.cli.progress import Progress
    from stigmer_core.cli.renaming import Renamer
    from stigmer_core.cli.reporting import report_failure
    from stigmer_core.cli.session import Session

    if not files and sys.stdin.isatty():
        raise CliError("stigmer import reads documents from stdin (`stigmer import < backup.yaml`) or -f FILE")
    sources = read_sources(files or (STDIN,))
    session = Session.of(ctx)
    given = overrides(ctx).org
    if to_org is not None:
        to_org = _valid_org(to_org)
        if given is not None and given != to_org:
            raise CliError(f"--org {given} and --to-org {to_org} disagree: give --to-org only", exit_code=2)
    parsed = []
    moved_from: set[str] = set()
    for source in sources:
        found = parse(
            source, session.catalog, org=session.org, org_given=given is not None, to_org=to_org or "",
            moved_from=moved_from,
        )  # fmt: skip
        check_whole(source.label, source.text, len(found))
        parsed += found
    if to_org is not None:
        one_org(moved_from, to_org)
    documents = in_apply_order(parsed, session.catalog)
    counts: Counter[str] = Counter()
    into: set[str] = set()  # the orgs documents were written to
    writable: dict[str, bool] = {}  # per org: whether this caller may write there (asked once)
    created: set[str] = set()
    unset: list[tuple[str, list[str], str]] = []
    renamer = Renamer() if new_ids else None
    held_elsewhere = 0  # documents refused for ids another org holds: said in full only the first times
    owners_dropped: list[str] = []  # documents imported without an owner no export carries
    failed_before = Failed()
    done = 0
    try:
        with Progress("importing", total=len(documents)) as progress:
            for done, document in enumerate(documents):
                own = ""
                if renamer is not None:
                    own, document = renamer.prepare(document)
                try:
                    outcome = failed_before.explained(document, apply_one(session, document, created=created))
                    while (dropped := _unexported_owner(session, document, outcome)) is not None:
                        said, document = dropped
                        outcome = failed_before.explained(document, apply_one(session, document, created=created))
                        if not outcome.failed:
                            owners_dropped.append(f"{document.where} ({document.ref}): {said}")
                except Unreachable as exc:  # the server went away: say how far the import got
                    written = done - counts["failed"]
                    exc = session.unreachable(exc)
                    raise CliError(
                        f"{exc.message}; {written} of {len(documents)} resources were imported before it, and "
                        "importing the same documents again finishes the job (what is there already is unchanged)",
                        details=exc.details,
                    ) from None
                except errors.Unauthenticated as exc:  # every later document would be refused the same way
                    raise CliError(_stopped(exc.message, done - counts["failed"], len(documents))) from None
                if isinstance(outcome.cause, errors.DeadlineExceeded):  # the server's word for the call's deadline
                    written = done - counts["failed"]
                    raise CliError(
                        f"the stigmer server at {session.target} did not answer in time ({document.where}, "
                        f"{document.ref}: {outcome.error}); {written} of {len(documents)} resources were imported "
                        "before it, and importing the same documents again finishes the job (what is there already "
                        "is unchanged)"
                    )
                if isinstance(outcome.cause, errors.Unavailable):  # the server's store: every later write would wait on it too
                    reason = f"{document.where} ({document.ref}): {outcome.error}"
                    raise CliError(
                        _stopped(reason, done - counts["failed"], len(documents))
                        + "; importing the same documents again when the server's store serves finishes the job"
                    )
                progress.advance()
                org = metadata(document.message).org
                # refused for the org, not the document: a role there that allows no writes, or none
                # at all (another org's token: "org 'acme' not found"); every later document would be too
                if isinstance(outcome.cause, errors.PermissionDenied | errors.NotFound) and not writable.setdefault(
                    org, _writes_in(session, org)
                ):
                    reason = f"{document.where} ({document.ref}): {outcome.error} (this caller may write nothing in org '{org}')"
                    if to_org is None and org != session.org:  # a local export ('local') into a server's org
                        reason += f"; to import them into org '{session.org}', give --to-org {session.org}"
                    raise CliError(_stopped(reason, done - counts["failed"], len(documents)))
                if outcome.failed:
                    counts["failed"] += 1
                    failed_before.add(document, outcome)
                    held = _held_elsewhere(outcome)
                    if held:  # every document of an export imported into a second org is: not 4,000 lines
                        held_elsewhere += 1
                        if held_elsewhere > HELD_ELSEWHERE_SHOWN:
                            continue
                    report_failure(
                        f"{document.where} ({document.ref}): {outcome.error}{held}",
                        outcome.details(),
                        verbose=overrides(ctx).verbose,
                    )
                    continue
                if renamer is not None:
                    renamer.written(own, outcome.result)
                counts[outcome.action] += 1
                into.add(org)
                keys = _unset_secrets(outcome.result)
                if keys:  # one left as it was is unset still, not unset by this import
                    still = " still" if outcome.action == "unchanged" else " now"
                    unset.append((f"{document.ref} in org '{metadata(document.message).org}'", keys, still))
    except KeyboardInterrupt:  # click would say "Aborted!" alone: say how far it got, and what finishes it
        raise CliError(
            f"interrupted; {done - counts['failed']} of {len(documents)} resources were imported before it (the one "
            "in flight may be too), and importing the same documents again finishes the job (what is there "
            "already is unchanged)",
            exit_code=130,
        ) from None
    if held_elsewhere > HELD_ELSEWHERE_SHOWN:
        report_failure(
            f"{held_elsewhere - HELD_ELSEWHERE_SHOWN} more documents were refused the same way: their ids are held "
            "in another org (import with --new-ids to copy them under new ids)"
        )
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    click.echo(
        f"imported {len(documents) - counts['failed']} of {len(documents)} resources ({summary or 'none given'})"
    )
    for ref, keys, when in unset:
        click.echo(f"{ref}: secrets{when} unset: {', '.join(keys)} (apply clear values to set them)")
    for said in owners_dropped[:OWNERS_DROPPED_SHOWN]:
        click.echo(f"note: {said}", err=True)
    if len(owners_dropped) > OWNERS_DROPPED_SHOWN:
        click.echo(
            f"note: {len(owners_dropped) - OWNERS_DROPPED_SHOWN} more documents were imported without an owner "
            "no export carries, as above",
            err=True,
        )
    hint = "" if to_org is not None else _elsewhere(into, session.org)  # --to-org chose where they went
    if hint:
        click.echo(f"note: {hint}", err=True)
    if counts["failed"]:
        ctx.exit(1)


HELD_ELSEWHERE_SHOWN = 5
"""Documents refused for ids another org holds that are named one by one; the rest are counted."""


def _held_elsewhere(outcome: Any) -> str:
    """What to do about a document whose id another org's object holds: the same export imported
    into a second org of the server it came from. Told from the refusal's field or metadata, not
    its words: ``metadata.org`` immutable for a caller who may see that object, NOT_FOUND naming
    the document's own id for one who may not."""
    from stigmer_core import errors
    from stigmer_core.cli.envelope import metadata

    cause, own = outcome.cause, str(metadata(outcome.document.message).id)
    if not own:
        return ""
    moved = isinstance(cause, errors.InvalidArgument) and any(v.field == "metadata.org" for v in cause.violations)
    hidden = type(cause) is errors.NotFound and cause.reason == "ID_TAKEN" and cause.metadata.get("id") == own
    if not (moved or hidden):
        return ""
    # the server's own advice (leave metadata.id out) is for one object: in an import, other
    # documents name the id, and a copy made so leaves them naming the original
    return (
        " (to copy it into this org under a new id, import with --new-ids, which also changes the ids naming it "
        "in the other documents)"
    )


def _elsewhere(into: set[str], shown: str) -> str:
    """What to do when the import wrote to orgs this CLI does not show: an export of a team
    server's org imported into a local store keeps that org, where `stigmer get` (org 'local')
    would say there is nothing."""
    if not into or shown in into:
        return ""
    orgs = sorted(into)
    if len(orgs) == 1:
        return (
            f"the resources are in org '{orgs[0]}', and this CLI acts in org '{shown}': give --org {orgs[0]} "
            f"to see them (or import with --to-org {shown} to put them in '{shown}')"
        )
    named = ", ".join(f"'{org}'" for org in orgs)
    return f"the resources are in orgs {named}, and this CLI acts in org '{shown}': give --org ORG to see them"
