"""What a daemon of a shared store says when it makes a new data-directory key.

On a team server every daemon has a data directory of its own, and a daemon that
starts without a key file (nor ``STIGMER_SECRET_KEY`` / ``STIGMER_SECRET_KEY_FILE``)
makes a new key, while another daemon of the same database may hold another. Both
start; the first secret sealed records one key, and every daemon holding the other
is then refused at each seal and unseal (docs/secrets.md). The first daemon of a
fresh team server must start with no manual key step (the README's walk-through
copies its new key to the others), so this is a warning at start, not a refusal:
it names the file and what the other daemons need, and says when the database
already holds objects with no key recorded (other daemons have served it, each
perhaps with a key of its own).
"""

from __future__ import annotations

import logging
from pathlib import Path

from stigmer_core.store.protocol import Store

log = logging.getLogger("stigmer_plugins.secrets")

OBJECTS = b"o/"
TOKENS = b"o/apitokens/"
"""API tokens are made before any daemon (the first admin's, by a command that holds no key)."""


def _holds_objects(store: Store) -> bool:
    """Whether the store holds objects a daemon wrote, so other daemons may have served it: an API
    token does not count, since a command makes the first one before any daemon starts. Two reads
    of one key each: the first object, and the first after every token."""
    with store.read() as txn:
        found = next(iter(txn.scan(OBJECTS, first=1)), None)
        if found is None or not found[0].startswith(TOKENS):
            return found is not None
        return next(iter(txn.scan(OBJECTS, after=TOKENS + b"\xff", first=1)), None) is not None


def warn_new_key(store: Store, path: Path, key_file_env: str) -> None:
    """Log that ``path`` is a new key every daemon of ``store``'s database must hold a copy of."""
    where, schema = getattr(store, "url", None), getattr(store, "schema", None)
    database = f"the database {where}" if isinstance(where, str) else "this store's database"
    if isinstance(schema, str):
        # daemons on another schema of the same database hold keys of their own
        database = f"schema {schema!r} of {database}"
    message = (
        f"made a new secret key in {path}: {database} is shared, and every daemon serving that schema must hold a copy "
        f"of this key file (copy it into each one's data directory, or point ${key_file_env} at a copy) "
        "before any of them seals a secret; a daemon holding another key is refused at every seal and unseal "
        "once the first secret records this one"
    )
    if _holds_objects(store):
        message += (
            ". The database already holds objects but records no key: other daemons have served it, each "
            "perhaps with a key of its own; give them all this one (or this daemon theirs) now"
        )
    log.warning(message)


__all__ = ["warn_new_key"]
