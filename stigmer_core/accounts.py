"""Whose shares a call counts against: its token's principal, and each org the principal is a member of.

A principal's share bounds one token. An org's admin can make more tokens, and the members of
one org together could still take what every org shares (the sync server's threads, the
bytes of answers not yet read): viewers of one org sending call headers only made every
other org's calls wait for a thread. So a call also counts against each of its principal's
orgs, each with a share of its own (``call_limit``, ``unsent_answers``).
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Account:
    """A caller's principal (a token's is ``token:<org>/<slug>``) and the orgs it belongs to."""

    principal: str
    orgs: tuple[str, ...] = ()
