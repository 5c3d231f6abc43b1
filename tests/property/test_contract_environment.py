"""The stateful contract for Environment, on the in-process channel and over the network.

Responses carry the redaction marker for secret values, so what was sent is
compared after the kind's own ``redact``. A key's secret value is fixed per
key here: a changed secret is invisible in a redacted response, so the
model could not tell a real change from none (tests/test_environment.py
covers changed secrets).
"""

from __future__ import annotations

from google.protobuf.message import Message

from stigmer_core.testing import KindContract, contract_tests


class EnvironmentContract(KindContract):
    def prepare(self, resource: Message, org: str) -> None:
        for key, item in resource.spec.data.items():  # type: ignore[attr-defined]
            if item.is_secret:
                item.value = f"secret-of-{key}"

    def _check_written(self, sent: Message, got: Message, *, org: str, slug: str) -> None:
        shown = type(sent)()
        shown.CopyFrom(sent)
        assert self.kind.redact is not None
        self.kind.redact(shown)
        super()._check_written(shown, got, org=org, slug=slug)


TestEnvironmentInProcess, TestEnvironmentNetwork = contract_tests("Environment", base=EnvironmentContract)
