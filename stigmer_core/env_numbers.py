"""Numbers the daemon reads from its environment, refused at start when they are not numbers."""

from __future__ import annotations

from collections.abc import Mapping

from stigmer_core.errors import StartupError


def seconds(environ: Mapping[str, str], name: str) -> float | None:
    """``environ[name]`` as seconds; None when unset or empty. Its range is the caller's to check."""
    raw = environ.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not a number of seconds") from None
