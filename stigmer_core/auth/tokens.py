"""API tokens: their format, their digest, and who a request's token makes the caller.

A token is ``stg_`` and 43 characters of URL-safe base64 (32 random bytes).
The server keeps only its SHA-256 digest, in the ``ApiToken`` kind's
``status.token_digest``, indexed so that authenticating a request is one
index entry and one object read. A random 256-bit secret needs no slow hash:
nobody can guess one from its digest.

Authenticated callers are cached for ``cache_seconds`` (default 5) so that a
busy client costs a dict lookup per call. Revoking or deleting a token
through this server forgets it at once. On a store other daemons share, each
daemon also drops its cache whenever it reads a change of an ApiToken from
the event log (``follow``), so one revoked elsewhere is refused as soon as
that daemon's event dispatcher reads the revocation (it wakes on the
database's notification, and with no stream open reads at most once per
``StreamSettings.observe_seconds``, 0.1 s); ``cache_seconds`` bounds it only
while the log cannot be read. Expiry is checked on every call, cached or not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from stigmer_core import errors
from stigmer_core.auth.access import LOCAL_ADMIN, ROLES, Caller
from stigmer_core.denied_log import DeniedLog
from stigmer_core.kinds.resources import Resources
from stigmer_core.kinds.runtime import Registry
from stigmer_core.store.protocol import Store

PREFIX = "stg_"
KIND = "ApiToken"
DIGEST_INDEX = "digest"
EXTENSION = "stigmer.auth"
IN_PROCESS_PEER = "in-process"
DEFAULT_CACHE_SECONDS = 5.0
MAX_CACHED = 10_000
_SHAPE = re.compile(r"stg_[A-Za-z0-9_-]{43}")
"""What ``new_token`` makes: anything else is refused without a look at the store."""


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(metadata: Sequence[tuple[str, Any]]) -> str | None:
    """The token of an ``authorization: Bearer …`` entry; None when there is none. Two entries are
    refused: taking the first, a proxy that adds its own after the client's (or a client's
    after a proxy's) would decide who the call runs as by the order of headers."""
    found = [value for key, value in metadata if key == "authorization"]
    if not found:
        return None
    if len(found) > 1:
        raise errors.Unauthenticated(
            f"the call carries {len(found)} authorization entries; send one", reason="TOKEN_MALFORMED"
        )
    text = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("the authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
    return token.strip()


class TokenRefused(errors.Unauthenticated):
    """A token the store knows, refused (revoked or expired): ``principal`` names it in the
    refusal's log line, so an operator sees which leaked or forgotten token is still in use."""

    def __init__(self, message: str, principal: str, *, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.principal = principal


def trusted_peer(peer: str) -> bool:
    """The in-process channel, or the daemon's Unix socket (mode 0600): the local administrator's own paths."""
    return peer == IN_PROCESS_PEER or peer.startswith("unix:")


class Authenticator:
    """Turns a request's metadata into the ``Caller`` it runs as.

    No token: the local administrator, unless ``required`` and the call came
    over the network (a trusted local path still is the administrator). A
    valid token: the principal it was issued to, whatever the path. A token
    that is unknown, revoked or expired: UNAUTHENTICATED when ``required``,
    and on the in-process channel and the daemon's Unix socket, where only this
    package's own client sends one, because its program gave ``connect()`` a
    token to try that token's roles (ignored there, a revoked viewer's token
    wrote as the local administrator and the test passed); otherwise, over
    the network, it is ignored like no token at all, since a server that
    requires none already trusts every caller (the official SDK always sends
    some key, and must keep working against a local daemon unconfigured).
    """

    def __init__(
        self,
        registry: Registry,
        store: Store,
        *,
        required: bool = False,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        denied_log: DeniedLog | None = None,
        follow: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.required = required
        self.denied_log = denied_log or DeniedLog()
        """Which of this server's refusals are logged (``controller.log_refusal``)."""
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Caller, float, float]] = {}  # digest -> caller, expires (epoch s), fetched
        self._refused: dict[
            str, tuple[str, str, float, str]
        ] = {}  # digest -> why, its reason, when, principal (if known)
        self._lock = threading.Lock()
        self._follow = follow
        self._following = threading.Lock()
        """Registers ``forget_all`` to run after each change of an ApiToken that other daemons
        commit (the event hub's ``on_change``); called before the first token is looked up."""
        self._generation = 0
        """Counts ``forget`` and ``forget_all``: a lookup that began before one is not cached."""

    def caller(self, metadata: Sequence[tuple[str, Any]], peer: str = "") -> Caller:
        try:
            token = bearer(metadata)
            if token is not None:
                return self.by_token(token)
        except errors.Unauthenticated:
            if self.required or trusted_peer(peer):
                raise
            return LOCAL_ADMIN
        if self.required and not trusted_peer(peer):
            raise errors.Unauthenticated(
                "this server requires an API token: send 'authorization: Bearer stg_…' (the CLI: "
                "`stigmer login --endpoint HOST:PORT --token TOKEN`; Python: connect(..., token=...))",
                reason="TOKEN_REQUIRED",
            )
        return LOCAL_ADMIN

    def by_token(self, token: str) -> Caller:
        """The token's caller, or UNAUTHENTICATED. Both answers are cached for ``cache_seconds``
        (a refused token cannot become valid: new tokens are new random strings)."""
        if _SHAPE.fullmatch(token) is None:  # garbage costs no lookup, and fills no cache
            raise errors.Unauthenticated(
                "this is not a Stigmer API token (stg_ and 43 characters)", reason="TOKEN_MALFORMED"
            )
        key = digest(token)
        now = self._clock()
        refused = self._refused.get(key)
        if refused is not None and now - refused[2] < self.cache_seconds:
            why, reason, _, principal = refused
            raise (
                TokenRefused(why, principal, reason=reason) if principal else errors.Unauthenticated(why, reason=reason)
            )
        cached = self._cache.get(key)
        if cached is not None and now - cached[2] < self.cache_seconds:
            caller, expires, _ = cached
        else:
            if self._follow is not None:
                self._start_following()
            generation = self._generation
            try:
                caller, expires = self._load(key)
            except errors.Unauthenticated as why:
                self._remember(self._refused, key, (why.message, why.reason, now, getattr(why, "principal", "")))
                raise
            self._remember(self._cache, key, (caller, expires, now), generation)
        if expires and time.time() >= expires:
            raise TokenRefused("the API token has expired", caller.principal, reason="TOKEN_EXPIRED")
        return caller

    def _remember(self, cache: dict[str, Any], key: str, entry: Any, generation: int | None = None) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return  # read from a snapshot that may be older than a revocation since forgotten
            if len(cache) >= MAX_CACHED:
                cache.clear()
            cache[key] = entry

    def _start_following(self) -> None:
        """Before the first lookup, so that every change committed after the snapshot it reads
        is followed by a ``forget_all``."""
        with self._following:  # a second caller waits until it is registered: its snapshot is later
            if self._follow is not None:
                self._follow(self.forget_all)
                self._follow = None

    def forget(self, token_digest: str) -> None:
        """Drop a revoked or deleted token from the cache (its revocation takes effect at once)."""
        with self._lock:
            self._generation += 1
            self._cache.pop(token_digest, None)

    def forget_all(self) -> None:
        """Drop every cached caller: some token changed, maybe through another daemon, and the
        event that says so need not name its digest. Each is looked up again on its next call."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def _load(self, key: str) -> tuple[Caller, float]:
        kind = self.registry.find(KIND)
        if kind is None:
            raise errors.Unauthenticated(
                "this server serves no ApiToken kind, so it accepts no token", reason="TOKEN_INVALID"
            )
        with self.store.read() as txn:
            resources = Resources(txn, self.registry)
            found: Any = None
            for object_id in resources.scan_index(kind, DIGEST_INDEX, (key,)):
                found = resources.get(kind, object_id)
                break
        if found is None or not hmac.compare_digest(found.status.token_digest, key):
            raise errors.Unauthenticated("the API token is not valid", reason="TOKEN_INVALID")
        if found.status.HasField("revoked_at"):
            raise TokenRefused(
                "the API token has been revoked",
                f"token:{found.metadata.org}/{found.metadata.slug}",
                reason="TOKEN_REVOKED",
            )
        role = found.spec.role
        if role not in ROLES:  # pragma: no cover - validated at create
            raise errors.Unauthenticated("the API token has no valid role", reason="TOKEN_INVALID")
        expires = (
            found.spec.expires_at.seconds + found.spec.expires_at.nanos / 1e9
            if found.spec.HasField("expires_at")
            else 0.0
        )
        principal = f"token:{found.metadata.org}/{found.metadata.slug}"
        return Caller(principal, {found.metadata.org: role}), expires


def authenticator(registry: Registry) -> Authenticator | None:
    found = registry.extensions.get(EXTENSION)
    return found if isinstance(found, Authenticator) else None
