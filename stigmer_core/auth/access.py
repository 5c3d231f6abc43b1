"""Who may do what: access levels, roles, and the caller a request runs as.

Every rpc needs one access level, fixed at startup from how its method is
bound (``access_of``). A role is a set of access levels, held per org. The
caller of a request holds roles in some orgs; the local administrator holds
every access level in every org and is the only caller that is not
restricted at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from stigmer_core.auth.roles import READ_OPERATIONS, ROLES, Access

__all__ = ["LOCAL_ADMIN", "READ_OPERATIONS", "ROLES", "Access", "Caller"]


def _frozen_roles(roles: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(roles))


@attrs.frozen
class Caller:
    """The principal a request runs as, and its role in each org it belongs to.

    ``principal`` is what audit fields and events record. ``roles`` is empty
    for the administrator, who is ``unrestricted``.
    """

    principal: str
    roles: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_roles)
    unrestricted: bool = False
    orgs: tuple[str, ...] = attrs.field(init=False)
    _allowed: Mapping[str, frozenset[Access]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "orgs", tuple(sorted(self.roles)))
        object.__setattr__(self, "_allowed", {org: ROLES[role] for org, role in self.roles.items()})

    def member_of(self, org: str) -> bool:
        """Whether the caller may know that anything in ``org`` exists."""
        return self.unrestricted or org in self._allowed

    def can(self, access: Access, org: str) -> bool:
        if self.unrestricted:
            return True
        allowed = self._allowed.get(org)
        return allowed is not None and access in allowed

    def can_anywhere(self, access: Access) -> bool:
        return self.unrestricted or any(access in allowed for allowed in self._allowed.values())


LOCAL_ADMIN = Caller("local", unrestricted=True)
"""The in-process caller, and every caller of a server that requires no authentication."""
