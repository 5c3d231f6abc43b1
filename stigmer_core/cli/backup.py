"""What ``export`` writes, chosen so that export -> empty store -> import -> export
gives the same bytes.

Kinds whose declaration says ``exported=False`` (run-time records such as
executions) are not written: importing them could not make them again as
they were, and they are not configuration.

Left out of every document, because the server owns them and import cannot
restore them:

- ``status`` (computed by the server; create starts it afresh; what a kind
  needs from it to make the same object again is put back by its
  declaration's ``export_fill``: a skill's zip goes in ``spec.artifact``),
- ``metadata.resourceVersion``, ``metadata.createdAt``, ``metadata.updatedAt``
  (stamped by the server on every write),
- ``metadata.version`` (a versioned kind's content version: the server
  derives it from the content on every write). The versions before it are
  not lost: a kind's ``export_history`` writes them as the document's
  top-level ``history`` (a skill's every version, with its tags and zip),
  which its ``import_history`` replays through the kind's own rpcs before
  the document is applied, so the same hashes and tags resolve after import.

Kept: ``apiVersion``, ``kind``, the rest of ``metadata`` (``id``, ``slug``,
``org``, ``name``, ``labels``, ``tags``, ``annotations``,
``ownerReferences``) and ``spec``, so import restores ids and slugs. That
holds for objects the server creates for another one too (an agent's
default instance): their ids are derived from the owner's, so importing the
owner under its id makes them again under theirs, and the document then
brings their spec back.

Documents are sorted by kind (in the order import writes them), org and
slug, and dumped with sorted keys, so the output depends only on the
objects. The first line says how many documents follow and the last line
closes the export (both YAML comments, which other tools skip), so import
refuses a backup that was cut short (a full disk, an interrupted copy)
instead of restoring part of it as if it were all. Secrets are whatever the server returns: kinds that declare secrets
redact them on every read, so they are never written in clear.
"""

from __future__ import annotations

import io
import itertools
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import IO, Any, TextIO

import attrs
from google.protobuf import json_format
from google.protobuf.message import Message

from stigmer_core import errors
from stigmer_core.cli import yamlio
from stigmer_core.cli.catalog import Catalog, KindInfo
from stigmer_core.cli.documents import to_dict
from stigmer_core.cli.envelope import metadata
from stigmer_core.cli.errors import CliError, describe
from stigmer_core.cli.progress import Progress
from stigmer_core.cli.session import Session

SERVER_OWNED_METADATA = ("resourceVersion", "createdAt", "updatedAt", "version")
HISTORY = "history"
"""A document's top-level key beside the resource: what its kind's ``export_history`` wrote."""
_HEADER = "# stigmer export: {count} objects; the last line closes it\n"
_FOOTER = "# end of stigmer export: {count} objects\n"
_HEADER_START = "# stigmer export: "
_FAILED = "# stigmer export failed: "
"""Where a failed export's last line would be, one line per thing not exported: a backup script
that ignores the exit code keeps a file that does not pass for a whole export (``check_whole``)."""
_OWNER_FIELD = "metadata.ownerReferences"


def exportable(catalog: Catalog, names: Sequence[str]) -> list[KindInfo]:
    """The kinds to export: every exported one when ``names`` is empty, else those named.

    Naming a kind that is not exported is an error rather than an empty
    export, so a backup script cannot silently miss what it asked for.
    """
    if not names:
        return [kind for kind in catalog.kinds if kind.exported]
    kinds = list(dict.fromkeys(catalog.kind(name) for name in names))
    for kind in kinds:
        if not kind.exported:
            raise CliError(
                f"kind '{kind.cli_name}' is not exportable (its declaration says exported=False); "
                "`stigmer export --all` leaves it out"
            )
    return kinds


@attrs.frozen
class Missing:
    """What an export could not take, said on stderr so a backup never silently misses it."""

    what: str
    reason: str


def _listed(session: Session, kind: KindInfo, *, org: str, orgs: Sequence[str] | None) -> Iterator[Message] | None:
    """Every object of ``kind`` in ``org``, a page at a time; across orgs, org by org when the kind's
    list insists on one (None when it does and ``orgs`` is not known yet)."""
    calls = session.calls(kind)
    listing = calls.iterate(org=org)
    try:
        first = next(listing, None)
    except errors.InvalidArgument:
        if org:
            raise
        if orgs is None:
            return None
        return itertools.chain.from_iterable(calls.iterate(org=each) for each in orgs)
    return itertools.chain(() if first is None else (first,), listing)


@attrs.frozen
class Entry:
    """One exported object as the export keeps it: what orders it and what it names; its
    document waits in the spool file, so an export holds no store's worth of objects."""

    kind: str
    org: str
    slug: str
    id: str
    names: tuple[tuple[str, str, str], ...]
    """(field, kind, id) of every owner and declared reference it holds."""
    at: int
    size: int


@attrs.define
class Export:
    """What ``collect`` found: entries in the order they were listed, and what could not be taken."""

    entries: list[Entry]
    missing: list[Missing]
    spool: IO[bytes]
    left_out: set[str] = attrs.Factory(set)
    """Ids of objects listed but not exported (named in ``missing``)."""
    unlisted: set[str] = attrs.Factory(set)
    """Names of the kinds whose list failed (named in ``missing``): none of their objects is in it."""
    notes: list[str] = attrs.Factory(list)
    """What exported documents cannot carry (a kind's ``export_fill`` says), said, not failed."""
    owned_elsewhere: list[tuple[str, str, str]] = attrs.Factory(list)
    """(object, owner kind, owner id) of exported objects owned by an object of a kind no export
    carries (an API token, an execution): said once the export is written, folded past a few."""

    def write(self, out: TextIO, catalog: Catalog, failed: Sequence[Missing] = ()) -> None:
        """The export: its first line, every document in write order (see above), its last line;
        with ``failed``, what was not exported where the last line would be."""
        order = catalog.owner_order(
            (e.kind, kind) for e in self.entries for field, kind, _ in e.names if field.startswith(_OWNER_FIELD)
        )
        out.write(_HEADER.format(count=len(self.entries)))
        for entry in sorted(self.entries, key=lambda e: (order[e.kind], e.kind, e.org, e.slug)):
            self.spool.seek(entry.at)
            out.write(self.spool.read(entry.size).decode("utf-8"))
        if not failed:
            out.write(_FOOTER.format(count=len(self.entries)))
        for item in failed:
            out.write(_FAILED + " ".join(f"not exported: {item.what}: {item.reason}".split()) + "\n")

    def text(self, catalog: Catalog) -> str:
        written = io.StringIO()
        self.write(written, catalog)
        return written.getvalue()

    def close(self) -> None:
        self.spool.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RETRY_SECONDS = 60.0
"""How long an export waits, in all, for a kind's list the server refused UNAVAILABLE (its database
away for a moment: a restart, a failover) before it gives the kind up: the pauses between
attempts, 1 s doubling to 8 s, add up to at most this."""


def _pauses(total: float) -> Iterator[float]:
    """The waits before each new attempt: 1, 2, 4, 8, 8, ... seconds, together at most ``total``."""
    pause, spent = 1.0, 0.0
    while spent + pause <= total:
        yield pause
        spent += pause
        pause = min(pause * 2, 8.0)


def collect(session: Session, kinds: Sequence[KindInfo], *, org: str, retry_seconds: float = RETRY_SECONDS) -> Export:
    """Every object of ``kinds`` in ``org`` ("" for every org the caller may read), and what could not be taken.

    Each object is written to the spool (a temporary file) as its document
    as soon as it is listed; only its ``Entry`` stays in memory. Kinds are
    listed each in its own reads while writes go on, so the lists are not
    one snapshot. They are read dependents first (sessions before the
    instances they name, instances before their agents): whatever an
    exported object names was made before it, so it is still there when its
    own kind is listed, and an object made during the export comes with
    everything it needs or not at all. What names an object deleted during
    the export is left out: with a note when the cascade took it too (gone as
    well), else named, and the export fails (``dangling``). A kind that fails is reported and the others are still
    exported; an object that cannot be written as a document (a value JSON
    cannot carry, such as a NaN stored before writes refused them) is named
    and the rest still written. A kind whose list needs an org (a third
    party's) is listed last, in every org the other kinds were found in. A
    kind whose list the server refuses UNAVAILABLE (its database away for a
    moment) is listed again from its start, for up to ``retry_seconds`` of
    pauses. On a terminal a bar counts the kinds done.
    """
    export = Export([], [], tempfile.TemporaryFile())  # noqa: SIM115 (the Export owns and closes it)
    orgs: dict[str, None] = {session.org: None}
    position = {kind.name: i for i, kind in enumerate(session.catalog.kinds)}
    queue = deque(sorted(kinds, key=lambda k: position.get(k.name, len(position)), reverse=True))
    deferred: deque[KindInfo] = deque()
    with Progress("exporting", total=len(kinds)) as progress:
        while queue or deferred:
            # the kinds whose list needs an org come last, when the others have told which orgs there are
            kind, known = (queue.popleft(), None) if queue else (deferred.popleft(), list(orgs))
            progress.describe(f"exporting {kind.plural} ({len(export.entries)} objects so far)")
            before, missing_before, notes_before = len(export.entries), len(export.missing), len(export.notes)
            owned_before = len(export.owned_elsewhere)
            pauses = _pauses(retry_seconds)
            try:
                while True:
                    try:
                        objects = _listed(session, kind, org=org, orgs=known)
                        if objects is not None:
                            for obj in objects:
                                _take(session, kind, obj, export)
                                orgs.setdefault(metadata(obj).org, None)
                        break
                    except errors.Unavailable as exc:  # the server's store away for a while: list the kind again
                        pause = next(pauses, None)
                        if pause is None:
                            raise
                        del export.entries[before:], export.missing[missing_before:], export.notes[notes_before:]
                        del export.owned_elsewhere[owned_before:]
                        progress.describe(f"exporting {kind.plural}: {exc.message}; listing it again in {pause:g} s")
                        time.sleep(pause)
                if objects is None:
                    deferred.append(kind)
                    continue
            except errors.StartupError as exc:  # the store cannot be opened: no kind can be listed, say it once
                export.close()
                raise CliError(describe(exc)[0]) from None
            except (errors.StigmerError, CliError) as exc:  # none of the kind, not part of it
                del export.entries[before:], export.missing[missing_before:], export.notes[notes_before:]
                del export.owned_elsewhere[owned_before:]
                refused = [kind]
                if _every_kind_refused(exc):  # said once for this kind and every one not listed yet
                    refused += [*queue, *deferred]
                    queue.clear()
                    deferred.clear()
                refused.sort(key=lambda each: position.get(each.name, len(position)))
                names = ", ".join(f"'{each.cli_name}'" for each in refused)
                export.missing.append(Missing(f"kind{'s' if len(refused) > 1 else ''} {names}", describe(exc)[0]))
                export.unlisted.update(each.name for each in refused)
            progress.advance()
    by_name = {kind.name: kind for kind in kinds}

    def deleted_since(entry: Entry) -> bool:
        try:
            return session.calls(by_name[entry.kind]).lookup(entry.org, entry.id) is None
        except (errors.StigmerError, CliError):  # not known to be gone: named, as before
            return False

    export.entries, gone, dropped = dangling(
        export.entries,
        set(by_name),
        left_out=export.left_out,
        unlisted=export.unlisted,
        deleted_since=deleted_since,
    )
    export.missing += gone
    export.notes += [
        f"{entry.kind} {entry.org}/{entry.slug} ({entry.id}): deleted while the export ran, as was the {named} "
        "it names: left out"
        for entry, named in dropped
    ]
    export.notes += _owned_elsewhere(export.owned_elsewhere)
    return export


def _owned_elsewhere(owned: list[tuple[str, str, str]]) -> list[str]:
    """Notes for exported objects whose owner no export carries: an import into a store without
    that owner takes them without it (``stigmer import`` says which), so they are no longer
    deleted with it."""
    notes = [
        f"{named}: owned by {owner} {owner_id}, of a kind no export carries: an import into a store without it "
        "takes this object without that owner"
        for named, owner, owner_id in owned[:FOLDED_PAST]
    ]
    if len(owned) > FOLDED_PAST:
        kinds = ", ".join(sorted({owner for _, owner, _ in owned[FOLDED_PAST:]}))
        notes.append(f"{len(owned) - FOLDED_PAST} more objects owned by objects no export carries ({kinds}), as above")
    return notes


def _every_kind_refused(exc: Exception) -> bool:
    """Whether every kind's list would be refused as this one was (an org the token has no role in,
    no valid token): said once, not once per kind."""
    return isinstance(exc, errors.Unauthenticated) or (
        isinstance(exc, errors.NotFound) and exc.reason == "ORG_NOT_FOUND"
    )


def _take(session: Session, kind: KindInfo, obj: Message, export: Export) -> None:
    """Spool ``obj``'s document and keep its entry, or name why it cannot be exported."""
    history: list[Any] = []
    if kind.export_fill is not None or kind.export_history is not None:
        call = session.calls(kind).call
        try:
            said = kind.export_fill(obj, call) if kind.export_fill is not None else None
            history = kind.export_history(obj, call) if kind.export_history is not None else []
        except (errors.StigmerError, CliError) as exc:
            export.missing.append(Missing(_named(kind, obj), describe(exc)[0]))
            export.left_out.add(metadata(obj).id)
            return
        export.notes.extend(f"{_named(kind, obj)}: {note}" for note in said or ())
    secrets = kind.secrets
    secret = secrets.placeheld(obj) if secrets is not None else []
    if secrets is not None and secret:
        export.notes.append(
            f"{_named(kind, obj)}: {', '.join(secret)} exported as the placeholder {secrets.placeholder!r} "
            "(a secret is never given out): an import into a store without this object refuses it until the "
            "document carries the value in its place (docs/plugins.md, Secret fields)"
        )
    for ref in getattr(metadata(obj), "owner_references", ()):
        owner = session.catalog.find(ref.kind)
        if owner is not None and not owner.exported:
            export.owned_elsewhere.append((_named(kind, obj), owner.name, ref.id))
    broken = _breaks_rules(obj)
    if broken:
        export.notes.append(
            f"{_named(kind, obj)}: breaks a rule of the installed protos ({broken}), which it was stored before: "
            "an import refuses it until it is fixed (apply the fix here, then export again)"
        )
    try:
        text = yamlio.dump_all([document(obj, history)]).encode("utf-8")
    except (json_format.SerializeToJsonError, ValueError) as exc:
        export.missing.append(Missing(_named(kind, obj), str(exc)))
        export.left_out.add(metadata(obj).id)
        return
    meta = metadata(obj)
    at = export.spool.seek(0, io.SEEK_END)
    export.spool.write(text)
    names = tuple((sys.intern(field), sys.intern(target), i) for field, target, i in _ids_named(kind, obj))
    export.entries.append(Entry(kind.name, sys.intern(meta.org), meta.slug, meta.id, names, at, len(text)))


def _breaks_rules(obj: Message) -> str:
    """What of ``obj`` the rules declared now refuse (a rule tightened since it was stored), said
    at export rather than at the import that needs it; empty when nothing, or when the validator
    cannot read the message's classes (read over reflection: the server checks them)."""
    from stigmer_core.pipeline import validation

    try:
        validation.check(obj)
    except errors.InvalidArgument as exc:
        return "; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in exc.violations[:3])
    except Exception:
        return ""
    return ""


def _named(kind: KindInfo, obj: Message) -> str:
    meta = metadata(obj)
    return f"{kind.name} {meta.org}/{meta.slug} ({meta.id})"


def _ids_named(kind: KindInfo, obj: Message) -> list[tuple[str, str, str]]:
    """(field, target kind, id) of every owner and declared reference ``obj`` holds."""
    named = [
        (f"{_OWNER_FIELD}[{i}]", ref.kind, ref.id)
        for i, ref in enumerate(getattr(metadata(obj), "owner_references", ()))
    ]
    for path, target in kind.reference_fields:
        holder: Any = obj
        *parents, leaf = path.split(".")
        for part in parents:
            holder = getattr(holder, part) if holder.HasField(part) else None
            if holder is None:
                break
        if holder is None:
            continue
        value = getattr(holder, leaf)
        named += [(path, target, v) for v in ([value] if isinstance(value, str) else value) if v]
    return named


def dangling(
    entries: list[Entry],
    kinds: set[str],
    *,
    left_out: Collection[str] = (),
    unlisted: Collection[str] = (),
    deleted_since: Callable[[Entry], bool] = lambda entry: False,
) -> tuple[list[Entry], list[Missing], list[tuple[Entry, str]]]:
    """``entries`` less those naming an object of an exported kind that is not among them, and what
    was left out, named (importing them would fail): with why the object they name is not there,
    when the export knows (its ``left_out`` ids could not be written, its ``unlisted`` kinds could
    not be listed); otherwise it was deleted while the export listed.

    An entry that ``deleted_since`` finds deleted itself since it was listed (the cascade that took
    what it names took it too) is no failure: it is dropped, like what it named, and what the
    export holds still imports. Without this, an ``export --all`` of a server
    where anyone deleted an agent while it ran failed, however often it was tried."""
    kept = entries
    gone: list[Missing] = []
    # left out for what they name, which the export says once above: counted, past a few, by kind
    along: dict[tuple[str, str, str], list[Missing]] = {}
    dropped: list[tuple[Entry, str]] = []
    dropped_ids: set[str] = set()
    listed = {entry.id for entry in entries}
    while True:
        present = {entry.id for entry in kept}
        still: list[Entry] = []
        for entry in kept:
            lost = next(((f, t, i) for f, t, i in entry.names if t in kinds and i not in present), None)
            if lost is None:
                still.append(entry)
                continue
            field, target, missing_id = lost
            named = f"{entry.kind} {entry.org}/{entry.slug} ({entry.id})"
            if missing_id in left_out or target in unlisted:
                why = "which could not be exported (named above)"
            elif missing_id in listed and missing_id not in dropped_ids:
                why = "which is left out itself (named above)"
            elif deleted_since(entry):
                dropped.append((entry, f"{target} {missing_id}"))
                dropped_ids.add(entry.id)
                continue
            else:
                why = "which is not in the export (deleted while it was written?); export again"
                gone.append(Missing(named, f"its {field} names {target} {missing_id}, {why}"))
                continue
            along.setdefault((entry.kind, target, why), []).append(
                Missing(named, f"its {field} names {target} {missing_id}, {why}")
            )
        if len(still) == len(kept):
            return kept, [*gone, *_folded(along)], dropped
        kept = still


FOLDED_PAST = 3
"""Objects left out for one reason (all naming one kind that could not be exported) that are named
one by one; past it, one line counts them: a kind the server refused during an outage left out
every object naming its objects, one line each, thousands of lines."""


def _folded(along: dict[tuple[str, str, str], list[Missing]]) -> Iterator[Missing]:
    for (kind, target, why), missing in along.items():
        if len(missing) <= FOLDED_PAST:
            yield from missing
            continue
        yield Missing(f"{len(missing)} {kind} objects (the first: {missing[0].what})", f"each names an object of kind {target}, {why}")


def unserved(session: Session) -> list[Missing]:
    """Stored objects of kinds no installed plugin serves (local backend), or a note that a server cannot tell."""
    from stigmer_core import config
    from stigmer_core.cli import stored

    if session.settings.backend != config.LOCAL:
        return []
    counts = stored.unserved(session.settings.data_dir, {k.key_prefix for k in session.catalog.kinds})
    if counts is None:
        return [Missing("the store's own kinds", "the local store could not be read to check for them")]
    return [
        Missing(
            f"{count} stored object{'s' if count != 1 else ''} under key prefix '{prefix}'",
            "no installed plugin serves that kind (reinstall its package to export them)",
        )
        for prefix, count in sorted(counts.items())
    ]


def document(obj: Message, history: list[Any] | None = None) -> dict[str, Any]:
    data = to_dict(obj)
    data.pop("status", None)
    meta = data.get("metadata", {})
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    if history:
        data[HISTORY] = history
    return data


def check_whole(label: str, text: str, documents: int) -> None:
    """Refuse an export that lost its end, or that failed: its first line says how many documents
    it holds, its last line closes it (a failed export writes none, but what it did not export).
    Text that does not start as an export does is not looked at."""
    if not text.startswith(_HEADER_START):
        return
    first = text.split("\n", 1)[0]
    count_text = first[len(_HEADER_START) :].split(" ", 1)[0]
    if not count_text.isdigit():
        return
    count = int(count_text)
    ended = text.endswith(_FOOTER.format(count=count)) or text.endswith(_FOOTER.format(count=count).rstrip("\n"))
    if not ended and f"\n{_FAILED}" in text:
        why = text[text.index(f"\n{_FAILED}") + len(_FAILED) + 1 :].split("\n", 1)[0]
        raise CliError(
            f"{label}: written by an export that failed ({why}), so it may lack objects of the org or kinds "
            "named; nothing was imported (export again once that is fixed; to import what it holds anyway, "
            "remove its first line)"
        )
    if not ended or documents != count:
        footer = _FOOTER.format(count=count).strip()
        if not ended and f"\n{footer}\n" in text:
            raise CliError(
                f"{label}: the export says it holds {count} objects and ends with '{footer}', but it goes on "
                "after that line (text added to its end, or two files joined); nothing was imported (remove what "
                "follows that line, or export again)"
            )
        raise CliError(
            f"{label}: cut short: the export says it holds {count} objects and ends with '{footer}', but it "
            + (f"holds {documents}" if ended else "has no such last line")
            + "; nothing was imported (export again, or restore the whole file)"
        )
