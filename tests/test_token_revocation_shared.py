"""A token revoked or deleted through one daemon of a shared store is refused by the others at once.

Each daemon caches the callers of the tokens it has checked (``cache_seconds``, 5 by default).
Revoking through one daemon forgot the token there only: the others went on taking it until
their entries aged out, a window in which a leaked admin token still worked. They now drop
their caches when their event dispatcher reads a change of an ApiToken. The caches here are
given an hour, so only that can end the token's run in time.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stigmer_core import Application
from stigmer_core.auth.tokens import TokenRefused
from stigmer_core.errors import Unauthenticated
from stigmer_core.kind_client import KindClient
from tests.auth_support import ALPHA, make_token

HOUR = 3600.0
DEADLINE = 20.0
"""Seconds a refusal may take to reach the other daemon in this test: a bound, not a measure."""


@pytest.fixture
def daemons(tmp_path: Path, stigmer_postgres_store_url: str) -> Iterator[tuple[Application, Application]]:
    one = Application.open(tmp_path / "a", durable=False, store=stigmer_postgres_store_url, require_auth=True)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")  # as a deployment copies it
    try:
        other = Application.open(tmp_path / "b", durable=False, store=stigmer_postgres_store_url, require_auth=True)
    except BaseException:
        one.close()
        raise
    for app in (one, other):
        app.authenticator.cache_seconds = HOUR
    yield one, other
    other.close()
    one.close()


def _refused_within(check: Callable[[], object], seconds: float) -> Unauthenticated | None:
    """The refusal ``check`` raises within ``seconds``, or None if it kept answering."""
    end = time.monotonic() + seconds
    while True:
        try:
            check()
        except Unauthenticated as refused:
            return refused
        if time.monotonic() >= end:
            return None
        time.sleep(0.02)


def _revoke(app: Application, made: Any) -> None:
    kind = app.registry.kind("ApiToken")
    revoke = next(b for b in kind.methods.values() if b.operation == "revoke")
    KindClient(app.channel(), kind).call("revoke", revoke.request_cls(value=made.metadata.id))  # type: ignore[call-arg]


def _delete(app: Application, made: Any) -> None:
    KindClient(app.channel(), app.registry.kind("ApiToken")).delete(made.metadata.id)


@pytest.mark.parametrize("end", [_revoke, _delete], ids=["revoked", "deleted"])
def test_a_token_ended_through_one_daemon_is_refused_by_the_other_despite_its_cache(
    daemons: tuple[Application, Application], end: Callable[[Application, Any], None]
) -> None:
    one, other = daemons
    token, made = make_token(one, ALPHA, "admin", "leaked")
    kept, _ = make_token(one, ALPHA, "viewer", "kept")
    for app in (one, other):  # both daemons now hold the tokens' callers in their caches
        assert app.authenticator.by_token(token).principal == f"token:{ALPHA}/leaked"
        assert app.authenticator.by_token(kept).principal == f"token:{ALPHA}/kept"
    end(one, made)
    assert _refused_within(lambda: one.authenticator.by_token(token), 0) is not None, "at once where it was ended"
    refused = _refused_within(lambda: other.authenticator.by_token(token), DEADLINE)
    assert refused is not None, f"the other daemon still took the {end.__name__[1:]}d token after {DEADLINE} s"
    if end is _revoke:
        assert isinstance(refused, TokenRefused) and refused.reason == "TOKEN_REVOKED"
    assert other.authenticator.by_token(kept).principal == f"token:{ALPHA}/kept", "another token is looked up again"


def test_a_lookup_that_began_before_a_revocation_is_not_cached(daemons: tuple[Application, Application]) -> None:
    """The other daemon read the token (valid) from a snapshot taken before the revocation, and
    its dispatcher emptied the cache before that lookup finished: the lookup must not put back
    what it read, or the revoked token would be taken for the cache's whole hour."""
    one, other = daemons
    token, made = make_token(one, ALPHA, "admin", "raced")
    auth = other.authenticator
    load = auth._load  # the real lookup, run between a revocation and the dispatcher's call

    def load_then_revoke(key: str) -> Any:
        found = load(key)
        seen = auth._generation  # before the revocation: the dispatcher may read it at once
        _revoke(one, made)
        assert _refused_within(lambda: one.authenticator.by_token(token), 0) is not None
        end = time.monotonic() + DEADLINE
        while auth._generation == seen and time.monotonic() < end:  # the other's dispatcher reads it
            time.sleep(0.02)
        assert auth._generation != seen, "the other daemon's dispatcher never read the revocation"
        return found

    auth._load = load_then_revoke  # type: ignore[method-assign]
    try:
        assert auth.by_token(token).principal == f"token:{ALPHA}/raced"  # answered from its snapshot
    finally:
        del auth._load
    with pytest.raises(TokenRefused):
        auth.by_token(token)


def test_the_hub_calls_a_kinds_observers_after_its_changes_only_and_past_one_that_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the token cache is emptied by: ``on_change`` callbacks of the kind whose events the
    dispatcher read, each called however the one before it failed."""
    from tests.agent_execution_support import Kinds

    calls: list[str] = []

    def faulty() -> None:
        calls.append("faulty")
        raise RuntimeError("an observer's own fault")

    with Application.open(tmp_path / "data", durable=False) as app:
        app.events.on_change("Agent", faulty)
        app.events.on_change("Agent", lambda: calls.append("agent"))
        app.events.on_change("Session", lambda: calls.append("session"))
        kinds = Kinds.on(app, app.channel())
        kinds.environment("env", {"REGION": ("eu", False)})
        end = time.monotonic() + DEADLINE
        while app.events.head < app.store.wait_for_revision(0, 0) and time.monotonic() < end:
            time.sleep(0.01)
        assert calls == [], "an Environment's change is no Agent's"
        kinds.agent("coder")
        while len(calls) < 2 and time.monotonic() < end:
            time.sleep(0.01)
    assert calls == ["faulty", "agent"]
    assert "a change callback failed" in caplog.text


def test_with_no_stream_open_the_hub_reads_for_its_observers_at_most_once_per_interval(tmp_path: Path) -> None:
    """Read commit by commit, following another daemon's serial creates cost each daemon 0.9 ms of
    CPU apiece just to keep its token cache true. A commit after a quiet spell is still read at
    once; the ones right after it wait for the interval, or for a stream to open."""
    from stigmer_core.pipeline.events import StreamSettings
    from tests.agent_execution_support import Kinds

    calls: list[float] = []
    with Application.open(tmp_path / "data", durable=False, streams=StreamSettings(observe_seconds=HOUR)) as app:
        app.events.on_change("Agent", lambda: calls.append(time.monotonic()))
        kinds = Kinds.on(app, app.channel())
        kinds.agent("first")
        end = time.monotonic() + DEADLINE
        while not calls and time.monotonic() < end:
            time.sleep(0.01)
        assert len(calls) == 1, "the first commit after a quiet spell is read at once"
        kinds.agent("second")
        time.sleep(1.0)  # a bound on how long the dispatcher is given to (wrongly) read it alone
        assert len(calls) == 1, "a commit right after one just read waits for the interval"
        sub = app.events.subscribe("Session")  # a stream opens: the dispatcher reads as before
        try:
            while len(calls) < 2 and time.monotonic() < end:
                time.sleep(0.01)
        finally:
            app.events.unsubscribe(sub)
        assert len(calls) == 2
