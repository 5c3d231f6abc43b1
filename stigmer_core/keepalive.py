"""How the daemon keeps connections alive, how often it lets clients ping it, and what one
connection may hold (its calls, the time to finish its handshake): grpc takes them all as the
server's channel arguments, so ``Keepalive`` carries them together.

A stream holds a slot (``STIGMER_MAX_STREAMS`` and the per-caller and per-org
shares) until its client goes away. A client that vanishes without closing
its connection (a laptop put to sleep, a network that drops packets instead
of refusing them) was noticed only when TCP gave up, hours later, and its
streams' slots stayed taken until then. The daemon pings a connection that
has been silent for ``time_seconds`` and closes it when no answer comes in
``timeout_seconds``, which ends its streams and frees their slots.

Clients may ping too (runners commonly set a keepalive): grpc's default lets
a client ping only every five minutes while the server sends no data, and
closes a connection that pings more often with GOAWAY ``too_many_pings``,
ending every stream on it (grpc's C core shows it as UNAVAILABLE "Too many
pings", grpc-js as RESOURCE_EXHAUSTED, which reads like a stream limit). The
daemon accepts a client ping every ``client_ping_seconds``, with or without
calls open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from stigmer_core import env_numbers
from stigmer_core.errors import StartupError

LONGEST = (2**31 - 1) / 1000
"""Seconds: grpc takes these as 32-bit counts of milliseconds (about 24.8 days)."""
SHORTEST = 0.001
"""Seconds: one millisecond, grpc's unit (shorter would reach it as 0)."""
_IN_RANGE = [attrs.validators.ge(SHORTEST), attrs.validators.le(LONGEST)]

_SETTINGS = (
    ("time_seconds", "STIGMER_KEEPALIVE_SECONDS"),
    ("timeout_seconds", "STIGMER_KEEPALIVE_TIMEOUT_SECONDS"),
    ("client_ping_seconds", "STIGMER_CLIENT_PING_SECONDS"),
    ("handshake_seconds", "STIGMER_HANDSHAKE_SECONDS"),
)
CALLS_PER_CONNECTION_ENV = "STIGMER_MAX_CALLS_PER_CONNECTION"
MAX_CALLS_PER_CONNECTION = 2**31 - 1


@attrs.frozen
class Keepalive:
    """Keepalive of the daemon's connections (docs/design.md, Limits)."""

    time_seconds: float = attrs.field(default=60.0, validator=_IN_RANGE)
    """A connection silent this long is pinged (``STIGMER_KEEPALIVE_SECONDS``)."""
    timeout_seconds: float = attrs.field(default=20.0, validator=_IN_RANGE)
    """A ping unanswered this long closes the connection (``STIGMER_KEEPALIVE_TIMEOUT_SECONDS``)."""
    client_ping_seconds: float = attrs.field(default=10.0, validator=_IN_RANGE)
    """The shortest interval between a client's pings the daemon accepts (``STIGMER_CLIENT_PING_SECONDS``)."""
    handshake_seconds: float = attrs.field(default=20.0, validator=_IN_RANGE)
    """A connection that has not finished its handshake (TLS, HTTP/2's preface) this long after it
    opened is closed (``STIGMER_HANDSHAKE_SECONDS``; grpc's own default is two minutes): sockets
    that connect and send nothing had held the daemon's file descriptors until none was left."""
    calls_per_connection: int = attrs.field(
        default=5000, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_CALLS_PER_CONNECTION)]
    )
    """Calls (streams) one connection may have open at once (``STIGMER_MAX_CALLS_PER_CONNECTION``).
    With no bound, grpc's C core does not protect itself from a client opening and resetting
    streams as fast as it can (HTTP/2 "rapid reset"): one such connection, with no token, had
    every other client's calls cancelled. A grpc client waits for a free call once it has the
    connection's settings; a burst sent on a new connection before them has the calls past the
    bound refused UNAVAILABLE, so the default is the daemon's queue of pending calls
    (``STIGMER_MAX_PENDING_CALLS``), past which grpc refuses them anyway (1,000 refused 694 of a
    client's 2,500 gets sent at once)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keepalive:
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for field, name in _SETTINGS:
            found = env_numbers.seconds(env, name)
            if found is None:
                continue
            values[field] = found
            if not SHORTEST <= values[field] <= LONGEST:  # NaN and infinity too
                raise StartupError(
                    f"{name} must be from {SHORTEST} to {LONGEST:,.3f} seconds (grpc counts milliseconds)"
                )
        calls = env.get(CALLS_PER_CONNECTION_ENV, "").strip()
        if not calls:
            return cls(**values)  # type: ignore[arg-type]  # each field's own number type
        if not calls.isdigit() or not 1 <= int(calls) <= MAX_CALLS_PER_CONNECTION:
            raise StartupError(
                f"{CALLS_PER_CONNECTION_ENV} must be a whole number from 1 to {MAX_CALLS_PER_CONNECTION:,}, not {calls!r}"
            )
        values["calls_per_connection"] = int(calls)
        return cls(**values)  # type: ignore[arg-type]

    def options(self) -> list[tuple[str, int]]:
        """grpc server channel arguments for these settings."""
        return [
            ("grpc.max_concurrent_streams", self.calls_per_connection),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_seconds * 1000)),
            ("grpc.keepalive_time_ms", int(self.time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_seconds * 1000)),
            # grpc's C core (1.85) waits for the keepalive ping's ack as long as for any ping's:
            # ``ping_timeout_ms`` (a minute), whatever ``keepalive_timeout_ms`` says
            ("grpc.http2.ping_timeout_ms", int(self.timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.client_ping_seconds * 1000)),
            ("grpc.http2.max_ping_strikes", 2),
        ]


@attrs.frozen
class ClientKeepalive:
    """Keepalive of a client's channel (``client.network_channel``): a runner's watch on a team
    server whose network drops its packets (a daemon's host gone, a firewall's state lost) sees
    nothing, not even the end of its stream, and waited for events that never came. The
    channel pings while a call is open and the connection is silent, and ends the calls with
    UNAVAILABLE when no answer comes. Pings are ``time_seconds`` apart at the closest, within
    the daemon's default ``STIGMER_CLIENT_PING_SECONDS`` (10 s)."""

    time_seconds: float = attrs.field(default=30.0, validator=_IN_RANGE)
    timeout_seconds: float = attrs.field(default=20.0, validator=_IN_RANGE)

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", int(self.time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_seconds * 1000)),
            ("grpc.http2.ping_timeout_ms", int(self.timeout_seconds * 1000)),  # as the server's, above
            ("grpc.keepalive_permit_without_calls", 0),  # an idle channel costs the daemon nothing
            # a watch sends nothing after its request: without this, two pings and no more
            ("grpc.http2.max_pings_without_data", 0),
        ]
