"""How much of the event log a store keeps, the same on every engine.

The log exists for watch and resume; it is kept within three bounds (a count
of revisions held, a total of bytes, an age), so neither many small updates
nor a few huge ones grow a store without limit.

The log is one for every org of a store, and its bounds are shared fairly:
each revision belongs to a partition (the org that wrote it), and when a
commit finds the log past the revision or byte bound, the partition holding
the most (revisions, or bytes) loses its oldest revision first, ties going to
the first name in byte order. An org that writes often, or writes large
objects, so shortens its own resume window before anyone else's, and an org
holding less than its share keeps its history. Age is the same for every
org: revisions past it go oldest first, whatever their partition. Each
partition remembers the newest revision pruned from it, which is what a
stream resuming in that org is checked against (``compacted_through``).

Each committing transaction prunes before it appends, at most about
``PRUNE_PER_COMMIT`` events and always whole revisions, so a commit's extra
work stays bounded and a backlog (after a smaller setting, or one huge
cascade) is worked off over the next commits.
"""

from __future__ import annotations

import os

import attrs

from stigmer_core import errors

DEFAULT_EVENT_RETENTION = 100_000
ENV_VARIABLES = (
    "STIGMER_EVENT_RETENTION_REVISIONS",
    "STIGMER_EVENT_RETENTION_BYTES",
    "STIGMER_EVENT_RETENTION_SECONDS",
)
MAX_COUNT = (1 << 62) - 1
"""The largest revision or byte bound: what every engine stores (PostgreSQL's bigint) with room."""
MAX_AGE_SECONDS = 100 * 366 * 24 * 3600
"""The longest age bound, a century: a longer one overflowed the clock arithmetic of every commit."""
PRUNE_PER_COMMIT = 1024
"""Events one commit prunes at most (whole revisions: a revision is never split)."""
BOUNDS = frozenset({"max_revisions", "max_bytes", "max_age_seconds"})
_VARIABLE_OF = dict(zip(("max_revisions", "max_bytes", "max_age_seconds"), ENV_VARIABLES, strict=True))


_RANGE_OF = {"max_revisions": (1, MAX_COUNT), "max_bytes": (0, MAX_COUNT), "max_age_seconds": (0, MAX_AGE_SECONDS)}


def _env_int(bound: str, default: int) -> int:
    """A bound from its variable, refused out of range by the variable's name (what the operator set)."""
    name = _VARIABLE_OF[bound]
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.StartupError(f"{name}={raw!r} is not a whole number") from None
    least, most = _RANGE_OF[bound]
    if not least <= value <= most:
        raise errors.StartupError(f"event retention: {name} must be from {least} to {most:,}, not {value}")
    return value


@attrs.frozen
class EventRetention:
    """How much of the event log is kept: the newest revisions within all three bounds.

    A watch or subscribe from a revision older than what is kept ends with
    ABORTED ("revision N compacted"); docs/design.md, Event retention.
    """

    max_revisions: int = attrs.field(
        default=DEFAULT_EVENT_RETENTION, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_COUNT)]
    )
    """Revisions the log holds at most, every org's together (``STIGMER_EVENT_RETENTION_REVISIONS``)."""
    max_bytes: int = attrs.field(default=256 << 20, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_COUNT)])
    """Bytes of events the log holds at most, every org's together (``STIGMER_EVENT_RETENTION_BYTES``)."""
    max_age_seconds: int = attrs.field(
        default=7 * 24 * 3600, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_AGE_SECONDS)]
    )
    """Age of the oldest event kept (``STIGMER_EVENT_RETENTION_SECONDS``)."""
    chosen: frozenset[str] = attrs.field(default=BOUNDS, eq=False, repr=False)
    """The bounds set on purpose (all three unless built from the environment). A PostgreSQL
    schema records only these and keeps what it holds for the others, so a daemon started with
    one variable set does not put the other two back to their defaults for every daemon."""

    @classmethod
    def from_env(cls) -> EventRetention:
        default = cls()
        return cls(
            max_revisions=_env_int("max_revisions", default.max_revisions),
            max_bytes=_env_int("max_bytes", default.max_bytes),
            max_age_seconds=_env_int("max_age_seconds", default.max_age_seconds),
            chosen=frozenset(bound for bound, name in _VARIABLE_OF.items() if os.environ.get(name)),
        )

    @classmethod
    def from_env_if_set(cls) -> EventRetention | None:
        """``from_env`` when one of its variables is set, else None: the store's own choice (a
        PostgreSQL schema keeps what the daemon that last set them chose, for every daemon on it)."""
        if not any(os.environ.get(name) for name in ENV_VARIABLES):
            return None
        return cls.from_env()

    def with_revisions(self, max_revisions: int | None) -> EventRetention:
        """These bounds with the revision count replaced (the older ``event_retention=`` argument)."""
        if max_revisions is None:
            return self
        return attrs.evolve(self, max_revisions=max_revisions, chosen=self.chosen | {"max_revisions"})

    def over(self, recorded: EventRetention) -> EventRetention:
        """The bounds chosen here, the others as ``recorded`` (what a schema held before)."""
        kept = {bound: getattr(recorded, bound) for bound in BOUNDS - self.chosen}
        return attrs.evolve(self, chosen=BOUNDS, **kept)
