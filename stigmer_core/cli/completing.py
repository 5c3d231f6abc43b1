"""Shell completion of kinds, their rpcs and object names (``stigmer get ag<TAB>``).

Click asks these while the shell waits, so they never fail: a backend that
cannot be reached or a kind that cannot be listed completes to nothing.
Names come from the org the command line gives (``--org``), else the
configured one, and at most ``LIMIT`` of them are listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

LIMIT = 200


def _session(ctx: click.Context) -> Any:
    from stigmer_core import config
    from stigmer_core.cli.options import overrides
    from stigmer_core.cli.session import Session

    flags = overrides(ctx)  # what --org, --backend... said so far on the line being completed
    return Session(
        config.resolve(backend=flags.backend, endpoint=flags.endpoint, data_dir=flags.data_dir, org=flags.org)
    )


def _asked(ctx: click.Context, ask: Callable[[Any], list[Any]]) -> list[Any]:
    """What ``ask`` reads through a session of the line's backend; nothing when that fails."""
    session = None
    try:
        session = _session(ctx)
        return ask(session)
    except Exception:
        return []
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


def _of_kind(ctx: click.Context, ask: Callable[[Any, Any], list[str]]) -> list[str]:
    """What ``ask`` reads of the kind the line named before (``kind_name``), if it names one."""
    kind_name = ctx.params.get("kind_name")
    if not kind_name:
        return []

    def of_kind(session: Any) -> list[str]:
        kind = session.catalog.find(str(kind_name))
        return ask(session, kind) if kind is not None else []

    return _asked(ctx, of_kind)


def kinds(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every name a kind answers to that starts with what was typed."""
    named = _asked(ctx, lambda session: [(n, kind.description) for kind in session.catalog.kinds for n in kind.names])
    typed = incomplete.lower()
    return [CompletionItem(name, help=about or None) for name, about in named if name.startswith(typed)]


def names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Slugs of the kind given before, in the org, that start with what was typed."""
    found = _of_kind(
        ctx,
        lambda session, kind: [
            str(obj.metadata.slug) for obj in session.calls(kind).iterate(org=session.org, limit=LIMIT)
        ],
    )
    return [CompletionItem(slug) for slug in found if slug.startswith(incomplete)]


def methods(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The rpcs of the kind given before (``stigmer call skill <TAB>``), custom ones included."""
    found = _of_kind(ctx, lambda session, kind: sorted(kind.methods))
    return [CompletionItem(name) for name in found if name.startswith(incomplete)]


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Let the shell complete file and directory names (``-f`` of ``apply`` and ``import``)."""
    return [CompletionItem(incomplete, type="file")]
