"""Testing helpers shipped with Stigmer Core, for first- and third-party kinds.

- ``stigmer_core.testing.strategies``: hypothesis strategies that build
  messages (valid, per the protovalidate rules in their descriptors) and
  resources of any registered kind.
- ``stigmer_core.testing.contract``: the stateful contract suite; one line
  per kind and path in a test module runs it.
- ``stigmer_core.testing.fixtures``: pytest fixtures (registered as the
  ``stigmer`` pytest plugin): a store in a temporary directory, an
  in-process channel and a real server on an ephemeral 127.0.0.1 port.
"""

from stigmer_core.testing.contract import KindContract, contract_tests

__all__ = ["KindContract", "contract_tests"]
