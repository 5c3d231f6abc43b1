"""Which listen addresses and targets are this machine's alone: those serve without TLS or tokens."""

from __future__ import annotations

import pytest

from stigmer_core.auth.transport import check_listen, is_loopback
from stigmer_core.errors import InsecureTransport


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:50051", "127.9.9.9:1", "[::1]:50051", "localhost:50051", "LOCALHOST:50051", "LocalHost",
     "[::ffff:127.0.0.1]:50051", "::ffff:127.0.0.1", "unix:/run/stigmer.sock"],
)  # fmt: skip
def test_loopback_addresses_serve_without_tls_or_tokens(address: str) -> None:
    """LOCALHOST and the v4-mapped ::ffff:127.0.0.1 were refused as "reachable from other machines"."""
    assert is_loopback(address)
    check_listen(address, tls=None, require_auth=False, insecure_no_auth=False)


@pytest.mark.parametrize(
    "address", ["0.0.0.0:50051", "[::]:50051", "[::ffff:10.0.0.1]:50051", "10.0.0.1:50051", "example.com:50051",
                "localhost.example.com:1"],
)  # fmt: skip
def test_other_addresses_need_tls_and_tokens(address: str) -> None:
    assert not is_loopback(address)
    with pytest.raises(InsecureTransport, match="reachable from other machines"):
        check_listen(address, tls=None, require_auth=False, insecure_no_auth=False)
