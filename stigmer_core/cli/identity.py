"""Who a server takes a caller for (its whoami), in one line: shared by login, whoami and
``backend status``."""

from __future__ import annotations

from typing import Any


def whoami_of(channel: Any, target: str) -> Any:
    """The server's whoami answer, or the CLI's error for its refusal."""
    # Imported here: `stigmer --help` imports the commands that import this, and must not load grpc.
    import grpc

    from stigmer_core.api.iam.identity.v1 import identity_pb2, identity_pb2_grpc
    from stigmer_core.cli.errors import from_rpc

    try:
        stub: Any = identity_pb2_grpc.IdentityServiceStub
        return stub(channel).whoami(identity_pb2.WhoamiRequest(), timeout=10)
    except grpc.RpcError as exc:
        raise from_rpc(exc, target) from exc


def describe_identity(identity: Any) -> str:
    """``token:acme/ci (editor in acme)``."""
    if identity.administrator:
        return f"{identity.principal} (local administrator: every role in every org)"
    roles = ", ".join(f"{b.role} in {b.org}" for b in identity.roles) or "no role"
    return f"{identity.principal} ({roles})"
