"""``whoami``: the caller as the server authenticates it.

Not a kind (nothing is stored), so it is a plain handler beside the kinds'
services, served on both paths and answered from the same ``Authenticator``.
A refused ``whoami`` is logged by ``log_denied``, which the application
passes in: the ``denied:`` line every refused kind rpc logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from stigmer_core import status
from stigmer_core.api.iam.identity.v1 import identity_pb2
from stigmer_core.auth.tokens import Authenticator
from stigmer_core.decoding import Malformed, refusal, tolerant
from stigmer_core.errors import PermissionDenied, Unauthenticated

SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name
METHOD = f"/{SERVICE}/whoami"

LogDenied = Callable[[Unauthenticated | PermissionDenied, str, Sequence[tuple[str, Any]], str], None]
"""Logs a refused call: (the refusal, the method's path, the call's metadata, its peer)."""


def identity_handlers(
    authenticator: Authenticator, log_denied: LogDenied | None = None
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    required = authenticator.required

    def whoami(request: identity_pb2.WhoamiRequest | Malformed, context: grpc.ServicerContext) -> identity_pb2.Identity:
        if isinstance(request, Malformed):
            status.abort(context, refusal(identity_pb2.WhoamiRequest, request))
        metadata = context.invocation_metadata()
        peer = context.peer()  # a token refused on the local paths is said so (``tokens.Authenticator``)
        try:
            caller = authenticator.caller(metadata, peer)
        except Exception as exc:
            if log_denied is not None and isinstance(exc, (Unauthenticated, PermissionDenied)):
                log_denied(exc, METHOD, metadata, peer)
            status.abort(context, exc)
        return identity_pb2.Identity(
            principal=caller.principal,
            roles=[identity_pb2.RoleBinding(org=org, role=role) for org, role in sorted(caller.roles.items())],
            administrator=caller.unrestricted,
            tokens_required=required,  # so a client learns it without a refused call of its own (a logged denial)
        )

    handler = grpc.unary_unary_rpc_method_handler(
        whoami,
        request_deserializer=tolerant(identity_pb2.WhoamiRequest),
        response_serializer=identity_pb2.Identity.SerializeToString,
    )
    return {SERVICE: {"whoami": handler}}
