"""A running daemon's watch on its schema's version: a newer release may migrate it meanwhile.

Daemons of one schema are meant to run one release, but a rolling upgrade starts a
newer one (which migrates at startup) while older ones still serve. An older daemon
then sends statements written for tables that changed: they fail in the database
(a column renamed, a table gone), and those failures were answered INTERNAL while
the daemon's health stayed SERVING, so its load balancer kept sending it calls.

Nothing is added to a call for this. A statement failing the way a changed table
makes it fail (``schema_shaped``) has the version re-read once, on a connection of
its own; the store's listener reads the version with the revision it already reads
(after each burst of other daemons' commits, or a quiet spell). Once the schema is
found newer than ``postgres_schema.VERSION``, a failure of that shape is refused
FAILED_PRECONDITION (reason ``SCHEMA_NEWER``) at once, naming both versions, and the
store reports that it cannot serve, so the health service answers NOT_SERVING.
Calls the newer tables still take (a migration that only adds) go on working:
health says NOT_SERVING all the same, since the operator is mid-upgrade and this
daemon must be restarted on the newer release.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from stigmer_core import __version__, errors
from stigmer_core.store.postgres_schema import VERSION, read_version

log = logging.getLogger(__name__)

REASON = "SCHEMA_NEWER"


def schema_shaped(exc: BaseException) -> bool:
    """Whether ``exc`` is what a correct statement of this engine meets only on tables other than
    the ones it was written for: an object or column it names is missing or of another type
    (SQLSTATE class 42 but a missing privilege), or a column it does not fill is required."""
    if not isinstance(exc, psycopg.Error) or isinstance(exc, pg_errors.InsufficientPrivilege):
        return False
    state = exc.sqlstate or ""
    return state.startswith("42") or state == "23502"


def newer_message(schema: str, found: int) -> str:
    return (
        f"schema {schema!r} is at version {found}, newer than this daemon's stigmer-core {__version__} knows "
        f"({VERSION}): a daemon of a newer release migrated it. Restart this daemon with that newer "
        f"stigmer-core (one whose schema version is {found} or newer)"
    )


class SchemaWatch:
    """The newest schema version this daemon has seen, and what a statement's failure means for it."""

    def __init__(self, schema: str, connect: Callable[[], psycopg.Connection[Any]], changed: Callable[[], None]):
        self.schema = schema
        self._connect = connect
        self._changed = changed
        """Called whenever ``newer`` changes (the store tells its health followers)."""
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        """Held while the error path reads the version: calls failing together wait for one read."""
        self.newer = 0
        """The schema's version while it is newer than this code knows; 0 while it is not."""
        self.version = 0
        """The schema's version as last read (0 before the listener's first read)."""

    def seen(self, version: int) -> None:
        """The version as read now (the listener's read, or the error path's)."""
        self.version = version
        newer = version if version > VERSION else 0
        with self._lock:
            if newer == self.newer:
                return
            self.newer = newer
        if newer:
            log.error("%s; until then it reports NOT_SERVING", newer_message(self.schema, newer))
        else:
            log.warning("schema %r is at version %d again, the one this daemon knows", self.schema, version)
        self._changed()

    def refusal(self, exc: psycopg.Error) -> errors.FailedPrecondition | None:
        """What to answer for ``exc`` when the schema moved past this code; None when it did not.

        The version is read again unless it is known to be newer already: a bug of this engine
        (a statement wrong on the tables it knows) costs a connection more, on its error path.
        """
        if not schema_shaped(exc):
            return None
        with self._reading:
            if not self.newer:
                try:
                    with self._connect() as conn:
                        version = read_version(conn, self.schema)
                except psycopg.Error as failed:
                    log.debug("could not read the version of schema %r: %s", self.schema, failed)
                    return None
                self.seen(version or 0)
        found = self.newer
        if not found:
            return None
        return errors.FailedPrecondition(
            f"{newer_message(self.schema, found)}; nothing was written by this call",
            reason=REASON,
            metadata={"schema": self.schema, "schemaVersion": found, "knownVersion": VERSION, "release": __version__},
        )
