import datetime

from stigmer_core.api.buf.validate import validate_pb2 as _validate_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from stigmer_core.api.agentic.execution.v1 import execution_pb2 as _execution_pb2
from stigmer_core.api.commons.apiresource.v1 import audit_pb2 as _audit_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2 as _metadata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowExecution(_message.Message):
    __slots__ = ("api_version", "kind", "metadata", "spec", "status")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    metadata: _metadata_pb2.ApiResourceMetadata
    spec: WorkflowExecutionSpec
    status: WorkflowExecutionStatus
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., metadata: _Optional[_Union[_metadata_pb2.ApiResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[WorkflowExecutionSpec, _Mapping]] = ..., status: _Optional[_Union[WorkflowExecutionStatus, _Mapping]] = ...) -> None: ...

class WorkflowExecutionSpec(_message.Message):
    __slots__ = ("workflow_instance_id", "trigger_message", "trigger_metadata", "runtime_env", "workflow_id")
    class TriggerMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RuntimeEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _execution_pb2.RuntimeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_execution_pb2.RuntimeValue, _Mapping]] = ...) -> None: ...
    WORKFLOW_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_METADATA_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_instance_id: str
    trigger_message: str
    trigger_metadata: _containers.ScalarMap[str, str]
    runtime_env: _containers.MessageMap[str, _execution_pb2.RuntimeValue]
    workflow_id: str
    def __init__(self, workflow_instance_id: _Optional[str] = ..., trigger_message: _Optional[str] = ..., trigger_metadata: _Optional[_Mapping[str, str]] = ..., runtime_env: _Optional[_Mapping[str, _execution_pb2.RuntimeValue]] = ..., workflow_id: _Optional[str] = ...) -> None: ...

class WorkflowExecutionStatus(_message.Message):
    __slots__ = ("phase", "tasks", "output", "error", "started_at", "completed_at", "runner", "heartbeat_at", "report_id", "recent_report_ids", "audit")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_REPORT_IDS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    phase: _execution_pb2.ExecutionPhase
    tasks: _containers.RepeatedCompositeFieldContainer[WorkflowTaskStatus]
    output: _struct_pb2.Struct
    error: _execution_pb2.ExecutionError
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    runner: str
    heartbeat_at: _timestamp_pb2.Timestamp
    report_id: str
    recent_report_ids: _containers.RepeatedScalarFieldContainer[str]
    audit: _audit_pb2.ApiResourceAudit
    def __init__(self, phase: _Optional[_Union[_execution_pb2.ExecutionPhase, str]] = ..., tasks: _Optional[_Iterable[_Union[WorkflowTaskStatus, _Mapping]]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[_execution_pb2.ExecutionError, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runner: _Optional[str] = ..., heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., report_id: _Optional[str] = ..., recent_report_ids: _Optional[_Iterable[str]] = ..., audit: _Optional[_Union[_audit_pb2.ApiResourceAudit, _Mapping]] = ...) -> None: ...

class WorkflowTaskStatus(_message.Message):
    __slots__ = ("task_name", "phase", "started_at", "completed_at", "error", "output", "task_kind")
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_KIND_FIELD_NUMBER: _ClassVar[int]
    task_name: str
    phase: _execution_pb2.ExecutionPhase
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    error: _execution_pb2.ExecutionError
    output: _struct_pb2.Struct
    task_kind: str
    def __init__(self, task_name: _Optional[str] = ..., phase: _Optional[_Union[_execution_pb2.ExecutionPhase, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_execution_pb2.ExecutionError, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., task_kind: _Optional[str] = ...) -> None: ...

class WorkflowExecutionId(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...

class ListWorkflowExecutionsRequest(_message.Message):
    __slots__ = ("org", "page_size", "page_token", "labels", "phase", "tags")
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
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    org: str
    page_size: int
    page_token: str
    labels: _containers.ScalarMap[str, str]
    phase: _execution_pb2.ExecutionPhase
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, org: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., phase: _Optional[_Union[_execution_pb2.ExecutionPhase, str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListWorkflowExecutionsByWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "page_size", "page_token")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    page_size: int
    page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class WorkflowExecutionList(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[WorkflowExecution]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[WorkflowExecution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WorkflowExecutionUpdateStatusInput(_message.Message):
    __slots__ = ("execution_id", "status", "resource_version")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    status: WorkflowExecutionStatus
    resource_version: int
    def __init__(self, execution_id: _Optional[str] = ..., status: _Optional[_Union[WorkflowExecutionStatus, _Mapping]] = ..., resource_version: _Optional[int] = ...) -> None: ...

class CancelWorkflowExecutionInput(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SubscribeWorkflowExecutionRequest(_message.Message):
    __slots__ = ("execution_id", "after_revision")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_revision: int
    def __init__(self, execution_id: _Optional[str] = ..., after_revision: _Optional[int] = ...) -> None: ...
