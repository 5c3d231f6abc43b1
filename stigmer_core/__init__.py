"""Stigmer Core: resource APIs from kind declarations.

A kind plugin declares its protobuf types, store prefixes and extra pipeline
steps; the framework serves its Command and Query gRPC services over an
embedded LMDB store, on the network or in process.

The names below are imported on first use (PEP 562), so importing a small
module of the package (``stigmer_core.cli`` answering ``--help``) does not
load grpc, protobuf and every kind first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stigmer_core.lazy_names import lazy_names

__version__ = "0.2.0"
"""The release: the one place it is written (pyproject.toml reads it from here), so
``stigmer --version`` says it without reading the installed package's metadata."""

if TYPE_CHECKING:
    from stigmer_core.application import Application
    from stigmer_core.auth.access import Access, Caller
    from stigmer_core.client import Client, connect
    from stigmer_core.errors import (
        AddressUnavailable,
        AlreadyExists,
        Conflict,
        DatabaseUnreachable,
        DataDirBusy,
        DeadlineExceeded,
        FailedPrecondition,
        FieldViolation,
        InsecureTransport,
        InvalidArgument,
        KindDowngrade,
        KindServedOtherwise,
        NotFound,
        OrgNotVisible,
        PermissionDenied,
        PluginFault,
        ReadableOnly,
        ReadOnlyMount,
        RegistryError,
        ResourceExhausted,
        StartupError,
        StigmerError,
        StoreInUse,
        Unauthenticated,
        Unavailable,
        Unimplemented,
    )
    from stigmer_core.hookspecs import hookimpl
    from stigmer_core.kinds.declaration import CustomOperation, IndexSpec, KindDeclaration, PrinterColumn, Reference
    from stigmer_core.kinds.secret_fields import SecretFields
    from stigmer_core.pipeline import Phase, RequestContext, Step
    from stigmer_core.pipeline.step import step
    from stigmer_core.status import from_rpc_error

_WHERE = {
    "Application": "stigmer_core.application",
    **dict.fromkeys(("Access", "Caller"), "stigmer_core.auth.access"),
    "Client": "stigmer_core.client",
    "connect": "stigmer_core.client",
    **dict.fromkeys(
        (
            "AddressUnavailable",
            "AlreadyExists",
            "Conflict",
            "DatabaseUnreachable",
            "DataDirBusy",
            "DeadlineExceeded",
            "FailedPrecondition",
            "FieldViolation",
            "InsecureTransport",
            "InvalidArgument",
            "KindDowngrade",
            "KindServedOtherwise",
            "NotFound",
            "OrgNotVisible",
            "PermissionDenied",
            "PluginFault",
            "ReadableOnly",
            "ReadOnlyMount",
            "RegistryError",
            "ResourceExhausted",
            "StartupError",
            "StigmerError",
            "StoreInUse",
            "Unauthenticated",
            "Unavailable",
            "Unimplemented",
        ),
        "stigmer_core.errors",
    ),
    "hookimpl": "stigmer_core.hookspecs",
    **dict.fromkeys(
        ("CustomOperation", "IndexSpec", "KindDeclaration", "PrinterColumn", "Reference"), "stigmer_core.kinds.declaration"
    ),
    "SecretFields": "stigmer_core.kinds.secret_fields",
    **dict.fromkeys(("Phase", "RequestContext", "Step"), "stigmer_core.pipeline"),
    "step": "stigmer_core.pipeline.step",
    "from_rpc_error": "stigmer_core.status",
}

__all__ = [
    "Access",
    "AddressUnavailable",
    "AlreadyExists",
    "Application",
    "Caller",
    "Client",
    "Conflict",
    "CustomOperation",
    "DataDirBusy",
    "DatabaseUnreachable",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "IndexSpec",
    "InsecureTransport",
    "InvalidArgument",
    "KindDeclaration",
    "KindDowngrade",
    "KindServedOtherwise",
    "NotFound",
    "OrgNotVisible",
    "PermissionDenied",
    "Phase",
    "PluginFault",
    "PrinterColumn",
    "ReadOnlyMount",
    "ReadableOnly",
    "Reference",
    "RegistryError",
    "RequestContext",
    "ResourceExhausted",
    "SecretFields",
    "StartupError",
    "Step",
    "StigmerError",
    "StoreInUse",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "connect",
    "from_rpc_error",
    "hookimpl",
    "step",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
