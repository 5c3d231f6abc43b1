"""A message-level rule of a request itself (no field to name) is INVALID_ARGUMENT, not a crash."""

from __future__ import annotations

import pytest
from google.protobuf import message_factory

from stigmer_core import InvalidArgument
from stigmer_core.pipeline import validation
from tests.kit.rules_message import Rules


def test_a_message_level_rule_of_the_request_is_reported_on_the_message() -> None:
    request = message_factory.GetMessageClass(Rules)(transport=1)  # STDIO without a command, among others
    with pytest.raises(InvalidArgument) as caught:
        validation.check(request)
    found = {(v.field, v.description) for v in caught.value.violations}
    assert ("", "command is required for STDIO") in found  # the empty path: the request itself
