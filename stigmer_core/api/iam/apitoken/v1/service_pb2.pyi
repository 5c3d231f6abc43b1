from stigmer_core.api.commons.apiresource.v1 import metadata_pb2 as _metadata_pb2
from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2 as _apitoken_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
