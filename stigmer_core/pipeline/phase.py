"""Where in a pipeline a step runs.

Steps before ``LOAD`` run outside the store transaction, so validation and
authorization never hold up the shared group commit; everything from
``LOAD`` on runs inside it (and may run again on engines that retry).
"""

from __future__ import annotations

import enum


class Phase(enum.IntEnum):
    VALIDATE = 10
    AUTHORIZE = 20
    PREPARE = 25  # expensive request-only work (decompression, parsing), once authorized
    LOAD = 30  # resolve slug, load existing objects
    CHECK = 40  # duplicate and version checks
    BUILD = 50  # compute the new state
    KIND = 60  # the kind's own steps
    PERSIST = 70
    PUBLISH = 80
    REDACT = 85
    RESPOND = 90

    @property
    def in_transaction(self) -> bool:
        return self >= Phase.LOAD
