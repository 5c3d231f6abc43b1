from stigmer_core.api.buf.validate import validate_pb2 as _validate_pb2
from stigmer_core.api.commons.apiresource.v1 import audit_pb2 as _audit_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2 as _metadata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SkillState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SKILL_STATE_UNSPECIFIED: _ClassVar[SkillState]
    SKILL_STATE_UPLOADING: _ClassVar[SkillState]
    SKILL_STATE_READY: _ClassVar[SkillState]
    SKILL_STATE_FAILED: _ClassVar[SkillState]
SKILL_STATE_UNSPECIFIED: SkillState
SKILL_STATE_UPLOADING: SkillState
SKILL_STATE_READY: SkillState
SKILL_STATE_FAILED: SkillState

class Skill(_message.Message):
    __slots__ = ("api_version", "kind", "metadata", "spec", "status")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    metadata: _metadata_pb2.ApiResourceMetadata
    spec: SkillSpec
    status: SkillStatus
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., metadata: _Optional[_Union[_metadata_pb2.ApiResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[SkillSpec, _Mapping]] = ..., status: _Optional[_Union[SkillStatus, _Mapping]] = ...) -> None: ...

class SkillSpec(_message.Message):
    __slots__ = ("description", "skill_md", "tag", "artifact")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SKILL_MD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    description: str
    skill_md: str
    tag: str
    artifact: bytes
    def __init__(self, description: _Optional[str] = ..., skill_md: _Optional[str] = ..., tag: _Optional[str] = ..., artifact: _Optional[bytes] = ...) -> None: ...

class SkillStatus(_message.Message):
    __slots__ = ("version_hash", "artifact_storage_key", "state", "artifact", "audit")
    VERSION_HASH_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_STORAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    version_hash: str
    artifact_storage_key: str
    state: SkillState
    artifact: SkillArtifact
    audit: _audit_pb2.ApiResourceAudit
    def __init__(self, version_hash: _Optional[str] = ..., artifact_storage_key: _Optional[str] = ..., state: _Optional[_Union[SkillState, str]] = ..., artifact: _Optional[_Union[SkillArtifact, _Mapping]] = ..., audit: _Optional[_Union[_audit_pb2.ApiResourceAudit, _Mapping]] = ...) -> None: ...

class SkillArtifact(_message.Message):
    __slots__ = ("sha256", "size_bytes", "uncompressed_bytes", "file_count")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNCOMPRESSED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    uncompressed_bytes: int
    file_count: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., uncompressed_bytes: _Optional[int] = ..., file_count: _Optional[int] = ...) -> None: ...

class SkillId(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...

class ListSkillsRequest(_message.Message):
    __slots__ = ("org", "page_size", "page_token", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ORG_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    org: str
    page_size: int
    page_token: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, org: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SkillList(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Skill]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Skill, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PushSkillRequest(_message.Message):
    __slots__ = ("org", "artifact", "tag", "name", "slug", "skill_md", "description")
    ORG_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    SKILL_MD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    org: str
    artifact: bytes
    tag: str
    name: str
    slug: str
    skill_md: str
    description: str
    def __init__(self, org: _Optional[str] = ..., artifact: _Optional[bytes] = ..., tag: _Optional[str] = ..., name: _Optional[str] = ..., slug: _Optional[str] = ..., skill_md: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListSkillVersionsRequest(_message.Message):
    __slots__ = ("skill_id", "page_size", "page_token")
    SKILL_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    skill_id: str
    page_size: int
    page_token: str
    def __init__(self, skill_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SkillTag(_message.Message):
    __slots__ = ("tag", "version_hash")
    TAG_FIELD_NUMBER: _ClassVar[int]
    VERSION_HASH_FIELD_NUMBER: _ClassVar[int]
    tag: str
    version_hash: str
    def __init__(self, tag: _Optional[str] = ..., version_hash: _Optional[str] = ...) -> None: ...

class ListSkillTagsResponse(_message.Message):
    __slots__ = ("tags", "next_page_token")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[SkillTag]
    next_page_token: str
    def __init__(self, tags: _Optional[_Iterable[_Union[SkillTag, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_storage_key",)
    ARTIFACT_STORAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    artifact_storage_key: str
    def __init__(self, artifact_storage_key: _Optional[str] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: bytes
    def __init__(self, artifact: _Optional[bytes] = ...) -> None: ...
