"""``KindClient`` takes a timeout and metadata as generated stubs do: the client's own for every
call, and a call's in place of (a timeout) or after (metadata) the client's.

Every call had ``timeout=10.0`` and no metadata, so a program could neither wait longer for a
large list nor send a header (``stigmer-dry-run``, a token) through it. Each is seen here by what
the real application does with it: a timeout of zero is DEADLINE_EXCEEDED without running the
call, a token in ``authorization`` is the caller, a dry run stores nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.headers import DRY_RUN
from stigmer_core.kind_client import DEFAULT_TIMEOUT, KindClient
from tests.auth_support import ALPHA, code_of, make_token

_names = itertools.count()
UNKNOWN_TOKEN = (("authorization", "Bearer stg_" + "x" * 43),)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    """Tokens required: a token the call carries is its caller in process too, an unknown one refused."""
    with Application.open(tmp_path / "data", durable=False, require_auth=True) as app:
        yield app


def _agent(org: str = "") -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata={"name": f"agent {next(_names)}", "org": org}, spec={"instructions": "Be brief."})


def _every_call(app: Application, client: KindClient, **options: Any) -> dict[str, Callable[[], object]]:
    """Each standard operation of ``client`` once, with ``options``, on objects of its own."""
    admin = KindClient(app.channel(), app.registry.kind("Agent"))
    kept: Any = admin.create(_agent(ALPHA))
    doomed: Any = admin.create(_agent(ALPHA))
    return {
        "create": lambda: client.create(_agent(ALPHA), **options),
        "apply": lambda: client.apply(_agent(ALPHA), **options),
        "update": lambda: client.update(kept, **options),
        "delete": lambda: client.delete(doomed.metadata.id, **options),
        "get": lambda: client.get(kept.metadata.id, **options),
        "get_by_reference": lambda: client.get_by_reference(org=ALPHA, slug=kept.metadata.slug, **options),
        "list_page": lambda: client.list_page(org=ALPHA, **options),
        "list_all": lambda: list(client.list_all(org=ALPHA, **options)),
    }


def _codes(calls: dict[str, Callable[[], object]]) -> dict[str, grpc.StatusCode]:
    return {name: code_of(call) for name, call in calls.items()}


def _all(code: grpc.StatusCode) -> dict[str, grpc.StatusCode]:
    return dict.fromkeys(
        ("create", "apply", "update", "delete", "get", "get_by_reference", "list_page", "list_all"), code
    )


def test_the_clients_timeout_goes_with_every_call_and_a_calls_own_replaces_it(app: Application) -> None:
    agents = app.registry.kind("Agent")
    assert KindClient(app.channel(), agents).timeout == DEFAULT_TIMEOUT == 10.0, "callers giving none keep 10 s"
    hasty = KindClient(app.channel(), agents, timeout=0)
    assert _codes(_every_call(app, hasty)) == _all(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert _codes(_every_call(app, hasty, timeout=10)) == _all(grpc.StatusCode.OK)
    assert _codes(_every_call(app, hasty, timeout=None)) == _all(grpc.StatusCode.OK), "None: no deadline"
    patient = KindClient(app.channel(), agents, timeout=None)
    assert _codes(_every_call(app, patient)) == _all(grpc.StatusCode.OK)
    assert _codes(_every_call(app, patient, timeout=0)) == _all(grpc.StatusCode.DEADLINE_EXCEEDED)
    kept: Any = patient.create(_agent(ALPHA))
    by_id = agent_pb2.AgentId(value=kept.metadata.id)
    assert code_of(lambda: hasty.call("get", by_id)) == grpc.StatusCode.DEADLINE_EXCEEDED, "call() by name too"
    assert hasty.call("get", by_id, timeout=10) == kept


def test_the_clients_metadata_goes_with_every_call_and_a_calls_own_is_sent_after_it(app: Application) -> None:
    agents = app.registry.kind("Agent")
    refused = KindClient(app.channel(), agents, metadata=UNKNOWN_TOKEN)
    assert _codes(_every_call(app, refused)) == _all(grpc.StatusCode.UNAUTHENTICATED)
    plain = KindClient(app.channel(), agents)  # the in-process channel's local administrator
    assert _codes(_every_call(app, plain)) == _all(grpc.StatusCode.OK)
    assert _codes(_every_call(app, plain, metadata=UNKNOWN_TOKEN)) == _all(grpc.StatusCode.UNAUTHENTICATED)

    token, _ = make_token(app, ALPHA, "editor", "deployer")
    deployer = KindClient(app.channel(), agents, metadata=(("authorization", f"Bearer {token}"),))
    rehearsed: Any = deployer.create(_agent(), metadata=((DRY_RUN, "true"),))  # the token's org, a dry run
    assert rehearsed.metadata.org == ALPHA
    assert rehearsed.status.audit.spec_audit.created_by.id == f"token:{ALPHA}/deployer", "the client's entry went too"
    assert code_of(lambda: plain.get(rehearsed.metadata.id)) == grpc.StatusCode.NOT_FOUND, "and the call's: none stored"
    made: Any = deployer.create(_agent())
    assert plain.get(made.metadata.id) == made
