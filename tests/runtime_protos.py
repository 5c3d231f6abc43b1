"""Proto files the test kinds describe at run time, without generated code of their own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool


def added(name: str, describe: Callable[[], descriptor_pb2.FileDescriptorProto]) -> Any:
    """The file ``name`` of the default pool, added from ``describe`` the first time: a module
    imported twice (by pytest and by a plugin's entry point) finds it there the second time."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(name)
    except KeyError:
        pass
    pool.Add(describe())
    return pool.FindFileByName(name)
