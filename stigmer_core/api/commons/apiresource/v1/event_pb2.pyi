import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_EVENT_TYPE_UNSPECIFIED: _ClassVar[ResourceEventType]
    RESOURCE_EVENT_TYPE_CREATED: _ClassVar[ResourceEventType]
    RESOURCE_EVENT_TYPE_UPDATED: _ClassVar[ResourceEventType]
    RESOURCE_EVENT_TYPE_DELETED: _ClassVar[ResourceEventType]
RESOURCE_EVENT_TYPE_UNSPECIFIED: ResourceEventType
RESOURCE_EVENT_TYPE_CREATED: ResourceEventType
RESOURCE_EVENT_TYPE_UPDATED: ResourceEventType
RESOURCE_EVENT_TYPE_DELETED: ResourceEventType

class ResourceEvent(_message.Message):
    __slots__ = ("revision", "type", "kind", "id", "object", "time", "index_keys_changed", "previous_index_keys", "principal", "org")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    INDEX_KEYS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_INDEX_KEYS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    revision: int
    type: ResourceEventType
    kind: str
    id: str
    object: bytes
    time: _timestamp_pb2.Timestamp
    index_keys_changed: bool
    previous_index_keys: _containers.RepeatedScalarFieldContainer[bytes]
    principal: str
    org: str
    def __init__(self, revision: _Optional[int] = ..., type: _Optional[_Union[ResourceEventType, str]] = ..., kind: _Optional[str] = ..., id: _Optional[str] = ..., object: _Optional[bytes] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., index_keys_changed: bool = ..., previous_index_keys: _Optional[_Iterable[bytes]] = ..., principal: _Optional[str] = ..., org: _Optional[str] = ...) -> None: ...
