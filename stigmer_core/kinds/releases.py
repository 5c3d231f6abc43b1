"""Which release of its plugin a kind is served by, and what the store records of it.

Two releases of one kind plugin can serve one team-server store at once (a
rolling upgrade). The older one knows neither the newer one's fields (a
write through it drops them: ``Resources._storable`` discards unknown
fields) nor its indexes (a write leaves their entries out; its start-up
reconcile would remove them). So the store records, per kind, the release
that last reconciled it (``m/kinds/<name>``, beside the key and id prefixes):

- at startup a release older than the recorded one is refused, unless the
  kind is named in ``STIGMER_ALLOW_KIND_DOWNGRADE`` (a deliberate downgrade,
  which then reconciles as any start does);
- every write of a kind reads that record once per transaction and is refused
  FAILED_PRECONDITION when another daemon has recorded a different release
  since this one started, instead of writing what that release would lose.

A release is the plugin's distribution name and version, found through the
``stigmer.kinds`` entry point that loads the plugin. The record also holds a
fingerprint of the kind's declaration, so two builds that name one version but
declare the kind differently (a build from a branch, a version not bumped: every
build of this repository says its one version) are told apart: writes are
refused once the other build reconciled the store, as for another release, but
its start is not, since the two have no order. A kind whose plugin no
distribution ships (one registered by hand, as tests do) is recorded by that
fingerprint alone, with the same rules.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping
from typing import cast

import attrs
import pluggy
from google.protobuf.descriptor import FileDescriptor

from stigmer_core.distributions import identity
from stigmer_core.kinds.declaration import ENTRY_POINT_GROUP, KindDeclaration

DOWNGRADE_ENV = "STIGMER_ALLOW_KIND_DOWNGRADE"
"""Kind names (comma-separated, or ``*`` for all) a daemon may serve with an older release
than the store records: the override for a deliberate downgrade."""


@attrs.frozen
class Release:
    """A plugin's distribution, as ``pip`` names it, and its version."""

    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"

    def older_than(self, other: Release) -> bool:
        """Whether this is an earlier version of the same distribution (False when either
        version is not PEP 440, or the distributions differ: then no order is known)."""
        # packaging is imported here, not at the top: only a start and a refused write compare
        # releases, and every CLI command would pay for its import (about 20 ms)
        from packaging.utils import canonicalize_name
        from packaging.version import InvalidVersion, Version

        if canonicalize_name(self.distribution) != canonicalize_name(other.distribution):
            return False
        try:
            return Version(self.version) < Version(other.version)
        except InvalidVersion:
            return False


def plugin_releases(pm: pluggy.PluginManager) -> dict[str, Release]:
    """Plugin name -> the release of the distribution whose ``stigmer.kinds`` entry point
    names that plugin object (plugins no distribution ships are left out)."""
    by_object: dict[int, Release] = {}
    read: dict[int, Release] = {}  # a distribution's entry points share it: its metadata is read once
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        target = _loaded(ep)
        dist = ep.dist
        if target is not None and dist is not None:
            release = read.get(id(dist))
            if release is None:
                release = read[id(dist)] = Release(*identity(dist))
            by_object.setdefault(id(target), release)
    found = {}
    for name, plugin in pm.list_name_plugin():
        release = by_object.get(id(plugin))
        if release is not None:
            found[name] = release
    return found


def _loaded(ep: importlib.metadata.EntryPoint) -> object | None:
    """What ``ep`` names, if its module is already imported (nothing is imported here)."""
    module = sys.modules.get(ep.module)
    if module is None or not ep.attr:
        return module
    try:
        return functools.reduce(getattr, ep.attr.split("."), module)
    except AttributeError:
        return None


_RUNTIME_FILES = ("google/protobuf/", "buf/validate/")
"""Proto files the protobuf and protovalidate packages ship: two daemons of one build may have
other versions of those installed, and the messages those files declare keep their fields."""


def _proto_files(file: FileDescriptor) -> list[FileDescriptor]:
    """``file`` and every file it imports, however indirectly, but the runtime's own."""
    found: dict[str, FileDescriptor] = {}
    pending = [file]
    while pending:
        current = pending.pop()
        if current.name in found or current.name.startswith(_RUNTIME_FILES):
            continue
        found[current.name] = current
        pending.extend(current.dependencies)
    return [found[name] for name in sorted(found)]


def fingerprint(decl: KindDeclaration) -> str:
    """What tells two declarations of a kind apart when no release does: the proto files its
    objects are written from (the resource's, and those it imports: the standard metadata's is
    one), the api_version it stamps on them, its indexes and references."""
    parts = [
        *(file.serialized_pb for file in _proto_files(cast(FileDescriptor, decl.resource.DESCRIPTOR.file))),
        decl.api_version.encode(),
        json.dumps(sorted((index.name, index.version) for index in decl.indexes)).encode(),
        json.dumps(sorted((ref.field, ref.kind) for ref in decl.references)).encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def kind_record(decl: KindDeclaration, release: Release | None) -> bytes:
    """The ``m/kinds/<name>`` record a daemon serving ``decl`` from ``release`` writes at startup
    and expects to find at every write."""
    record: dict[str, object] = {
        "key_prefix": decl.key_prefix,
        "id_prefix": decl.id_prefix,
        "declaration": fingerprint(decl),
    }
    if release is not None:
        record["release"] = {"distribution": release.distribution, "version": release.version}
    return json.dumps(record, sort_keys=True).encode()


def recorded_release(record: Mapping[str, object]) -> Release | None:
    found = record.get("release")
    if not isinstance(found, dict):
        return None
    return Release(str(found.get("distribution", "")), str(found.get("version", "")))


def described(record: Mapping[str, object]) -> str:
    """How messages name what a record says served the kind."""
    release = recorded_release(record)
    declaration = record.get("declaration")
    if release is not None:
        return f"release {release}" + (f" (declaration fingerprint {declaration})" if declaration else "")
    if declaration:
        return f"a declaration with fingerprint {declaration}"
    return "a release that recorded no version"


def another_build(ours: Mapping[str, object], theirs: Mapping[str, object]) -> bool:
    """Whether two records name one release but different declarations of the kind: two builds
    of one version (neither is older, so neither start is refused). A record from before
    declarations were recorded tells nothing of its build."""
    release, declared = recorded_release(ours), theirs.get("declaration")
    return (
        release is not None
        and release == recorded_release(theirs)
        and bool(declared)
        and ours.get("declaration") != declared
    )


def downgrades_allowed(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The kind names (lower case; ``*``: every kind) ``DOWNGRADE_ENV`` names."""
    raw = environ.get(DOWNGRADE_ENV, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def moved_on(kind: str, expected: bytes, raw: bytes | None) -> str:
    """Why a write of ``kind`` is refused: the store records ``raw``, not this daemon's record
    (``expected``)."""
    if raw is None:
        return f"kind {kind!r}: the store no longer records which release serves it; restart this daemon"
    ours, theirs = json.loads(expected), json.loads(raw)
    said = (
        f"kind {kind!r} was reconciled to {described(theirs)} by another daemon since this one started with "
        f"{described(ours)}; writing here could drop that release's fields and index entries: restart this "
        "daemon with that release"
    )
    if another_build(ours, theirs):
        said += " (both builds name one version; give a build that changes a kind a new version)"
    return said
