from stigmer_core.api.agentic.workflow.v1 import workflow_pb2 as _workflow_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2 as _metadata_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
