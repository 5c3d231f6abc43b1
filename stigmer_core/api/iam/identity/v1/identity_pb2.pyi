from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhoamiRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Identity(_message.Message):
    __slots__ = ("principal", "roles", "administrator", "tokens_required")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ADMINISTRATOR_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    principal: str
    roles: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    administrator: bool
    tokens_required: bool
    def __init__(self, principal: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ..., administrator: bool = ..., tokens_required: bool = ...) -> None: ...

class RoleBinding(_message.Message):
    __slots__ = ("org", "role")
    ORG_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    org: str
    role: str
    def __init__(self, org: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...
