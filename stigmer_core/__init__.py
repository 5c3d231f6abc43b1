"""Stigmer Core: resource APIs from kind declarations.

A kind plugin declares its protobuf types, store prefixes and extra pipeline
steps; the framework serves its Command and Query gRPC services over an
embedded LMDB store, on the network or in process.
"""

from stigmer_core.application import Application
from stigmer_core.client import Client, connect
from stigmer_core.errors import (
    AddressUnavailable,
    AlreadyExists,
    Conflict,
    DataDirBusy,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RegistryError,
    ResourceExhausted,
    StartupError,
    StigmerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from stigmer_core.hookspecs import hookimpl
from stigmer_core.kinds.declaration import CustomOperation, IndexSpec, KindDeclaration, PrinterColumn, Reference
from stigmer_core.pipeline import Phase, RequestContext, Step, step
from stigmer_core.status import from_rpc_error

__all__ = [
    "AddressUnavailable",
    "AlreadyExists",
    "Application",
    "Client",
    "Conflict",
    "CustomOperation",
    "DataDirBusy",
    "FailedPrecondition",
    "FieldViolation",
    "IndexSpec",
    "InvalidArgument",
    "KindDeclaration",
    "NotFound",
    "PermissionDenied",
    "Phase",
    "PrinterColumn",
    "Reference",
    "RegistryError",
    "RequestContext",
    "ResourceExhausted",
    "StartupError",
    "Step",
    "StigmerError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "connect",
    "from_rpc_error",
    "hookimpl",
    "step",
]
