"""Drawn environment references, kept in their object's org as the server requires
(``stigmer_plugins.environment.keep_environment_refs_in_org``): the rule is a kind's,
not a field rule the strategies could read."""

from __future__ import annotations

from typing import Any


def keep_in_org(resource: Any, org: str) -> None:
    for ref in resource.spec.environment_refs:
        if ref.org and ref.org != org:
            ref.org = org
