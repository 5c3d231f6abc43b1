"""Access levels and the roles made of them: the vocabulary of ``access``, without its classes.

Apart so that ``stigmer --help`` can list the roles a token may have (``token create --role``)
without importing attrs, which ``access``'s ``Caller`` is built with: that import was a fifth
of the command's start-up.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Access(enum.Enum):
    READ = "read"
    """get, getByReference, list, watch, subscribe and a kind's read queries."""
    WRITE = "write"
    """create, apply, update, delete and a kind's commands."""
    RUN = "run"
    """What a runner does: execution status updates, a live execution's secrets."""
    ADMIN = "admin"
    """Managing the org's API tokens."""


READ_OPERATIONS = frozenset({"get", "getByReference", "list", "watch", "subscribe"})
"""Standard (and conventional) read-only method names, classified READ by the framework."""

ROLES: Mapping[str, frozenset[Access]] = MappingProxyType(
    {
        "viewer": frozenset({Access.READ}),
        "runner": frozenset({Access.READ, Access.RUN}),
        "editor": frozenset({Access.READ, Access.WRITE}),
        "admin": frozenset(Access),
    }
)
"""Role name -> what it allows. An editor is not a runner: clear secrets of a
running execution go to runners (and admins, who can make runner tokens)."""
