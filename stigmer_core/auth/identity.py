"""``whoami``: the caller as the server authenticates it.

Not a kind (nothing is stored), so it is a plain handler beside the kinds'
services, served on both paths and answered from the same ``Authenticator``.
"""

from __future__ import annotations

import grpc

from stigmer_core import status
from stigmer_core.api.iam.identity.v1 import identity_pb2
from stigmer_core.auth.tokens import Authenticator
from stigmer_core.decoding import Malformed, refusal, tolerant

SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


def identity_handlers(authenticator: Authenticator) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    required = authenticator.required

    def whoami(request: identity_pb2.WhoamiRequest | Malformed, context: grpc.ServicerContext) -> identity_pb2.Identity:
        if isinstance(request, Malformed):
            status.abort(context, refusal(identity_pb2.WhoamiRequest, request))
        try:
            caller = authenticator.caller(context.invocation_metadata(), context.peer() if required else "")
        except Exception as exc:
            status.abort(context, exc)
        return identity_pb2.Identity(
            principal=caller.principal,
            roles=[identity_pb2.RoleBinding(org=org, role=role) for org, role in sorted(caller.roles.items())],
            administrator=caller.unrestricted,
        )

    handler = grpc.unary_unary_rpc_method_handler(
        whoami,
        request_deserializer=tolerant(identity_pb2.WhoamiRequest),
        response_serializer=identity_pb2.Identity.SerializeToString,
    )
    return {SERVICE: {"whoami": handler}}
