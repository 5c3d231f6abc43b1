"""Structured fuzzing of every unary rpc of every served kind, over a real server on 127.0.0.1.

Requests are drawn from each method's request descriptor, ignoring the
declared rules on purpose: empty and huge strings (some past the 4 MiB
message limit), ids of real objects and ids with ``/`` or a newline,
unknown enum numbers, Structs nested past the depth limit, big maps and
repeated fields, and page tokens forged from real and made-up keys. Every
answer must be a status the design documents: never INTERNAL or UNKNOWN,
never a hang (each call has a deadline), and the daemon serves afterwards,
on either engine (LMDB, and a team server's PostgreSQL).

The example count per rpc is small and bounded, so the whole file runs in
CI in about a minute; a failing example is printed by hypothesis as usual.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stigmer_core import Application
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds.registry import build_registry
from stigmer_core.kinds.runtime import KindRuntime, MethodBinding
from stigmer_core.plugins import plugin_manager
from stigmer_core.server import Server
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_core.store.postgres_store import PostgresStore
from stigmer_core.store.protocol import Store
from stigmer_core.testing import postgres
from stigmer_core.testing.postgres import selected_engines
from tests.gizmo_kind import GizmoPlugin
from tests.hardening_support import agent
from tests.widget_kind import WidgetPlugin

F = FieldDescriptor
EXAMPLES = 15
DEADLINE = 20.0
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}

_PLUGINS = [WidgetPlugin(), GizmoPlugin()]  # test kinds too: one has message-level rules
_REGISTRY = build_registry(plugin_manager(plugins=_PLUGINS))
UNARY: list[tuple[KindRuntime, MethodBinding]] = [
    (kind, binding)
    for kind in _REGISTRY.kinds
    for binding in kind.methods.values()
    if not binding.server_streaming
]


class Target:
    """The server under fuzz and the ids of a few real objects it holds."""

    def __init__(self, app: Application, server: Server, channel: grpc.Channel, ids: list[str]) -> None:
        self.app = app
        self.server = server
        self.channel = channel
        self.ids = ids


@pytest.fixture(scope="module", params=selected_engines())
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Once per engine: the team server's store answers hostile requests through other code
    (its own key encoding in SQL, its pool and statement limits) than LMDB's."""
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    pm = plugin_manager(plugins=_PLUGINS)
    url = ""
    if request.param == "lmdb":
        store: Store = LmdbStore(data, durable=False)
    else:
        url = postgres.fresh_schema_url(request.getfixturevalue("stigmer_postgres_url"))
        store = PostgresStore(url, durable=False)
    app = Application(build_registry(pm), store, pm, data_dir=data)
    server = Server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    channel = grpc.insecure_channel(server.address)
    agents = KindClient(channel, app.registry.kind("Agent"))
    ids = []
    for name in ("alpha", "beta", "gamma"):
        made: Any = agents.create(agent(name))
        ids += [made.metadata.id, made.status.default_instance_id]
    yield Target(app, server, channel, ids)
    channel.close()
    server.stop(grace=1)
    app.close()
    if url:
        postgres.drop_schema(url)


# -- hostile messages from descriptors -------------------------------------------------

_REAL_IDS: list[str] = []  # filled from the target before drawing


def _huge() -> st.SearchStrategy[str]:
    return st.builds(
        lambda unit, count: unit * count,
        st.sampled_from(["x", "/", "é", "\0", "-"]),
        st.sampled_from([300, 70_000, 1_100_000, 4_300_000]),
    )


def _strings(huge: bool) -> st.SearchStrategy[str]:
    ulid = st.text(alphabet="0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26)
    return st.one_of(
        st.just(""),
        st.text(max_size=12),
        st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=70),
        st.sampled_from(["agt", "ain", "env", "wdg", "gzm", "x"]).flatmap(
            lambda p: st.builds(lambda u, tail: f"{p}-{u}{tail}", ulid, st.sampled_from(["", "\n", "/agents", "/"]))
        ),
        st.deferred(lambda: st.sampled_from(_REAL_IDS or ["agt-" + "0" * 26])),
        *([_huge()] if huge else []),
    )


def _page_tokens() -> st.SearchStrategy[str]:
    keys = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"o/agents/", b"s/agents/local/", b"x/agents/_label/", b"o/", b"e/", b"m/revision"]).flatmap(
            lambda p: st.builds(lambda tail: p + tail, st.binary(max_size=30))
        ),
    )
    return st.one_of(
        keys.map(lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()),
        st.text(max_size=20),
        _huge(),
    )


def _int_range(field: Any) -> tuple[int, int]:
    if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return -(1 << 63), (1 << 63) - 1
    if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return 0, (1 << 64) - 1
    if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return 0, (1 << 32) - 1
    return -(1 << 31), (1 << 31) - 1


def _nested_struct(levels: int, wide: int) -> Message:
    from google.protobuf import struct_pb2

    top = struct_pb2.Struct()
    for i in range(wide):
        top.fields[f"k{i}"].string_value = "v"
    inner = top
    for _ in range(levels):
        inner = inner.fields["d"].struct_value
    return top


def _scalar(field: Any, depth: int, huge: bool) -> st.SearchStrategy[Any] | None:
    """Values of one field; ``huge`` allows the multi-megabyte strings (one field's worth, not a list's)."""
    t = field.type
    if field.name == "page_token":
        return _page_tokens()
    if t == F.TYPE_STRING:
        return _strings(huge)
    if t == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=32), *([_huge().map(str.encode)] if huge else []))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=32)
    if t == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 7, 99, (1 << 31) - 1]))
    if t == F.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Struct":
            wide = [0, 3, 300] if huge else [0, 3]
            return st.builds(_nested_struct, st.sampled_from([0, 1, 5, 20, 28]), st.sampled_from(wide))
        if name in ("google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"):
            return None
        if depth <= 0:
            return None
        return _hostile(field.message_type, depth - 1, huge)
    lo, hi = _int_range(field)
    return st.one_of(st.integers(min_value=lo, max_value=hi), st.sampled_from([0, -1, lo, hi]))


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == F.LABEL_REPEATED)


@st.composite
def _hostile_message(draw: st.DrawFn, desc: Any, depth: int, huge: bool) -> Message:
    msg = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            size = draw(st.sampled_from([0, 1, 3, 200]))
            small = huge and size <= 1
            key = _scalar(field.message_type.fields_by_name["key"], depth, small)
            value = _scalar(field.message_type.fields_by_name["value"], depth, small)
            if key is None or value is None:
                continue
            pairs = draw(st.dictionaries(key, value, min_size=0, max_size=size))
            target = getattr(msg, field.name)
            for k, v in pairs.items():
                if field.message_type.fields_by_name["value"].type == F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
            continue
        if _is_repeated(field):
            count = draw(st.sampled_from([0, 1, 3, 300, 2000]))
            item = _scalar(field, min(depth, 1), huge and count <= 1)
            if item is None:
                continue
            if count > 3:  # a big repeated field: one drawn value, many times
                getattr(msg, field.name).extend([draw(item)] * count)
            else:
                getattr(msg, field.name).extend(draw(st.lists(item, max_size=count)))
            continue
        item = _scalar(field, depth, huge and draw(st.integers(0, 4)) == 0)
        if item is None:
            continue
        value = draw(item)
        if field.type == F.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(value)
        else:
            setattr(msg, field.name, value)
    return msg


def _hostile(desc: Any, depth: int = 3, huge: bool = True) -> st.SearchStrategy[Message]:
    return _hostile_message(desc, depth, huge)


# -- the test ----------------------------------------------------------------------


def _serving(channel: grpc.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE).status
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize(("kind", "binding"), UNARY, ids=[b.path for _, b in UNARY])
def test_no_request_gets_internal_or_hangs(target: Target, kind: KindRuntime, binding: MethodBinding) -> None:
    _REAL_IDS[:] = target.ids
    call = target.channel.unary_unary(
        binding.path,
        request_serializer=binding.request_cls.SerializeToString,
        response_deserializer=binding.response_cls.FromString,
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(request=_hostile(binding.request_cls.DESCRIPTOR))
    def one(request: Message) -> None:
        try:
            call(request, timeout=DEADLINE)
        except grpc.RpcError as exc:
            assert exc.code() not in NEVER, f"{binding.path}: {exc.code()}: {exc.details()}"

    one()
    assert _serving(target.channel)
