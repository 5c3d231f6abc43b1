"""The stateful contract for Agent, on the in-process channel and over the network.

Secret MCP headers come back as the redaction marker, so what was sent is
compared after the kind's own ``redact``. Generated ``secret_headers`` are
narrowed to headers the server has (a name with no header is refused, which
tests/test_agent_mcp_secrets.py covers), and a secret header's value is fixed
per name: a changed secret is invisible in a redacted response.
"""

from __future__ import annotations

from google.protobuf.message import Message

from stigmer_core.testing import KindContract, contract_tests
from tests.property.environment_refs import keep_in_org


class AgentContract(KindContract):
    def prepare(self, resource: Message, org: str) -> None:
        keep_in_org(resource, org)
        for server in resource.spec.mcp_servers:  # type: ignore[attr-defined]
            named = [name for name in server.secret_headers if name in server.headers]
            del server.secret_headers[:]
            server.secret_headers.extend(named)
            for name in named:
                server.headers[name] = f"secret-of-{name}"

    def _check_written(self, sent: Message, got: Message, *, org: str, slug: str) -> None:
        shown = type(sent)()
        shown.CopyFrom(sent)
        assert self.kind.redact is not None
        self.kind.redact(shown)
        super()._check_written(shown, got, org=org, slug=slug)


TestAgentInProcess, TestAgentNetwork = contract_tests("Agent", base=AgentContract)
