"""The ``stigmer`` pytest plugin (installed with stigmer-core) gives the app,
channel and server fixtures; this adds the Prompt stubs on both paths."""

from __future__ import annotations

import grpc
import pytest
from prompt_helpers import Stubs


@pytest.fixture
def stubs(stigmer_channel: grpc.Channel) -> Stubs:
    return Stubs(stigmer_channel)
