"""Per-org quota on a team server: the objects and bytes one org holds, counted in every write's
transaction (``m/org-usage/<org>``), and a token's write that would take its org past
``max_org_objects`` or ``max_org_bytes`` refused with RESOURCE_EXHAUSTED once the whole write is
counted, with nothing of it committed. Both engines, over the network with API tokens."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stigmer_core import Application
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.agent.v1 import service_pb2_grpc as agent_grpc
from stigmer_core.api.agentic.environment.v1 import environment_pb2
from stigmer_core.api.agentic.skill.v1 import service_pb2_grpc as skill_grpc
from stigmer_core.api.agentic.skill.v1 import skill_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2
from stigmer_core.errors import ResourceExhausted, StartupError
from stigmer_core.headers import DRY_RUN
from stigmer_core.ids import new_id
from stigmer_core.kind_client import KindClient
from stigmer_core.kinds import usage
from stigmer_core.limits import Limits
from stigmer_core.status import from_rpc_error
from stigmer_core.store import keys
from tests.agent_execution_support import Kinds
from tests.auth_support import make_token, seed_org, served, with_token

ACME, BETA = "acme", "beta"


@contextlib.contextmanager
def team(
    path: Path, store: str | None, monkeypatch: pytest.MonkeyPatch, *, objects: int = 0, size: int = 0
) -> Iterator[Application]:
    """A team server's application (tokens required over the network) with these org limits."""
    monkeypatch.setenv("STIGMER_MAX_ORG_OBJECTS", str(objects))
    monkeypatch.setenv("STIGMER_MAX_ORG_BYTES", str(size))
    app = Application.open(path / "data", durable=False, require_auth=True, store=store)
    try:
        yield app
    finally:
        app.close()


@contextlib.contextmanager
def editor(app: Application, org: str) -> Iterator[grpc.Channel]:
    """A network channel carrying a new editor token of ``org``."""
    token, _ = make_token(app, org, "editor", f"{org} editor")
    with served(app) as server, grpc.insecure_channel(server.address) as channel:
        yield with_token(channel, token)


def _stored(app: Application) -> dict[str, tuple[int, int]]:
    with app.store.read() as txn:
        return usage.stored(txn)


def _recounted(app: Application) -> dict[str, tuple[int, int]]:
    with app.store.read() as txn:
        return usage.recount(txn, app.registry)


def _env(name: str, org: str, value: str = "x") -> environment_pb2.Environment:
    env = environment_pb2.Environment(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org))
    env.spec.data["V"].value = value
    return env


def _agent(name: str, org: str) -> agent_pb2.Agent:
    return agent_pb2.Agent(metadata=metadata_pb2.ApiResourceMetadata(name=name, org=org), spec=agent_pb2.AgentSpec())


def _refused(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    return str(refused.value.details())


def test_an_org_at_its_object_limit_is_refused_while_another_org_still_creates(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch, objects=4) as app:
        envs = app.registry.kind("Environment")
        with editor(app, ACME) as acme, editor(app, BETA) as beta:
            # each org holds its editor token: 1 object
            acme_envs, beta_envs = KindClient(acme, envs), KindClient(beta, envs)
            made = [acme_envs.create(_env(f"e{i}", ACME)) for i in range(3)]
            assert _stored(app)[ACME][0] == 4
            before = _stored(app)
            message = _refused(lambda: acme_envs.create(_env("one-too-many", ACME)))
            assert "org 'acme' holds 4 objects and this write adds 1, past its limit of 4 (max_org_objects" in message
            assert "max_org_objects" in message and "STIGMER_MAX_ORG_OBJECTS" in message, message
            _refused(lambda: acme_envs.apply(_env("by-apply", ACME)))  # the import path: same pipeline
            assert _stored(app) == before, "a refused write changes no counter"
            assert len(list(KindClient(app.channel(), envs).list_all(org=ACME))) == 3
            beta_envs.create(_env("e0", BETA))  # another org's room is its own
            # a delete always works, and frees room
            acme_envs.delete(made[0].metadata.id)
            assert _stored(app)[ACME][0] == 3
            acme_envs.create(_env("fits-again", ACME))
            # an update that keeps the count is never refused by the object limit
            kept = made[1]
            kept.spec.data["V"].value = "changed"
            acme_envs.update(kept)
        assert _stored(app) == _recounted(app)


def test_derived_objects_count_and_a_write_refused_part_way_leaves_the_counters(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's default instance counts: with room for one object, an agent (two) is refused,
    and the agent already written in the transaction is rolled back with its count."""
    with team(tmp_path, stigmer_store, monkeypatch, objects=3) as app, editor(app, ACME) as acme:
        agents = agent_grpc.AgentCommandControllerStub(acme)
        agent = agents.create(_agent("first", ACME))
        assert _stored(app)[ACME][0] == 3  # token, agent, its instance
        agents.delete(agent_pb2.AgentId(value=agent.metadata.id))
        assert _stored(app)[ACME][0] == 1, "the cascade gives back what it removed"
        KindClient(acme, app.registry.kind("Environment")).create(_env("one", ACME))
        before = _stored(app)
        message = _refused(lambda: agents.create(_agent("second", ACME)))
        # the agent was counted before its instance was refused, but is not stored: what the org
        # holds, and what the whole write adds
        assert "org 'acme' holds 2 objects and this write adds 2, past its limit of 3" in message, message
        assert _stored(app) == before == _recounted(app)
        assert not list(KindClient(app.channel(), app.registry.kind("Agent")).list_all(org=ACME))


def test_a_byte_refusal_part_way_says_what_is_stored_and_what_the_whole_write_adds(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent fits under the byte limit and its default instance does not: the refusal gives the
    org's bytes before the write, not with the agent the rolled-back write counted, and the bytes
    of both."""
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        local = agent_grpc.AgentCommandControllerStub(app.channel())
        token, _ = make_token(app, ACME, "editor")
        before = _stored(app)[ACME][1]
        made = local.create(_agent("measure", ACME))
        both = _stored(app)[ACME][1] - before
        instances = KindClient(app.channel(), app.registry.kind("AgentInstance"))
        instance = next(iter(instances.list_all(org=ACME)))
        local.delete(agent_pb2.AgentId(value=made.metadata.id))
        held = _stored(app)[ACME][1]
    # room for the agent (a name of the same length), with half its instance's bytes to spare
    limit = held + both - instance.ByteSize() // 2
    with (
        team(tmp_path, stigmer_store, monkeypatch, size=limit) as app,
        served(app) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        agents = agent_grpc.AgentCommandControllerStub(with_token(channel, token))
        message = _refused(lambda: agents.create(_agent("measurf", ACME)))
        assert f"org 'acme' holds {held:,} bytes" in message, message
        added = int(message.split("this write adds ", 1)[1].split(" ", 1)[0].replace(",", ""))
        assert added > instance.ByteSize(), message  # the agent's bytes and its instance's
        assert _stored(app)[ACME][1] == held


def test_an_org_at_its_limits_is_told_everything_the_write_adds_not_its_first_object(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An org holding exactly its limit: the agent itself is past it, before its default instance
    is written. The refusal said the write adds 1 object, and the agent's bytes alone; it gives
    the agent and its instance, in the message and in the ErrorInfo's ``held`` and ``adds``."""
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        token, _ = make_token(app, ACME, "editor")
        held, before = _stored(app)[ACME]
        with served(app) as server, grpc.insecure_channel(server.address) as channel:
            agents = agent_grpc.AgentCommandControllerStub(with_token(channel, token))
            made = agents.create(_agent("measure", ACME))
            both = _stored(app)[ACME][1] - before
            agents.delete(agent_pb2.AgentId(value=made.metadata.id))
        instance_bytes = both - made.ByteSize()
        assert _stored(app)[ACME] == (held, before)
    for limits, words, metadata in (
        (
            {"objects": held},
            f"org 'acme' holds {held:,} object{'s' if held != 1 else ''} and this write adds 2, past its limit",
            {"held": str(held), "adds": "2", "setting": "STIGMER_MAX_ORG_OBJECTS"},
        ),
        (
            {"size": before},
            f"org 'acme' holds {before:,} bytes of objects and this write adds ",
            {"held": str(before), "setting": "STIGMER_MAX_ORG_BYTES"},
        ),
    ):
        with (
            team(tmp_path, stigmer_store, monkeypatch, **limits) as app,
            served(app) as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            agents = agent_grpc.AgentCommandControllerStub(with_token(channel, token))
            with pytest.raises(grpc.RpcError) as refused:
                agents.create(_agent("measurf", ACME))  # a name of the same length
            error = from_rpc_error(refused.value)
            assert isinstance(error, ResourceExhausted) and error.reason == "ORG_QUOTA", refused.value.details()
            assert words in str(refused.value.details()), refused.value.details()
            assert {k: error.metadata.get(k) for k in metadata} == metadata, error.metadata
            if "size" in limits:  # the agent's bytes and its instance's (timestamps may differ by a byte or two)
                adds = int(error.metadata["adds"])
                assert abs(adds - both) <= 16 < instance_bytes, (adds, both, instance_bytes)
                assert f"adds {adds:,} bytes" in str(refused.value.details())
            assert _stored(app)[ACME] == (held, before) == _recounted(app)[ACME]


def test_bytes_an_update_grows_past_the_limit_are_refused_and_a_shrinking_one_passes(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch, size=20_000) as app:
        with editor(app, ACME) as acme:
            envs = KindClient(acme, app.registry.kind("Environment"))
            env: Any = envs.create(_env("big", ACME, "v" * 10_000))
            held = _stored(app)[ACME][1]
            assert 10_000 < held < 20_000
            grown = environment_pb2.Environment()
            grown.CopyFrom(env)
            grown.spec.data["V"].value = "v" * 25_000
            message = _refused(lambda: envs.update(grown))
            assert f"org 'acme' holds {held:,} bytes ({held / 1024:.1f} KiB) of objects" in message, message
            assert "max_org_bytes" in message and "STIGMER_MAX_ORG_BYTES" in message, message
            assert _stored(app)[ACME][1] == held
            env.spec.data["V"].value = "small"
            shrunk: Any = envs.update(env)
            assert _stored(app)[ACME][1] < held - 9_000
            # an org already past a limit (the local administrator wrote) may still shrink and delete
            local = KindClient(app.channel(), app.registry.kind("Environment"))
            local.create(_env("admin-made", ACME, "a" * 20_000))
            assert _stored(app)[ACME][1] > 20_000
            _refused(lambda: envs.create(_env("tiny", ACME)))
            shrunk.spec.data["V"].value = ""
            envs.update(shrunk)
            envs.delete(shrunk.metadata.id)
        assert _stored(app) == _recounted(app)


def test_an_org_at_its_byte_limit_can_still_revoke_a_token_and_cancel_a_run(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leaked editor token filled the org: its admin's revoke (24 bytes more on the token) was
    refused, as were a runner's final report and an editor's cancel, which leave a run IN_PROGRESS.
    Writes that add no object may go a sixteenth past the limit; creates may not."""
    from stigmer_core.api.iam.apitoken.v1 import apitoken_pb2
    from stigmer_core.api.iam.apitoken.v1 import service_pb2_grpc as token_grpc
    from tests.agent_execution_support import IN_PROGRESS

    with team(tmp_path, stigmer_store, monkeypatch, size=40_000) as app:
        local = Kinds.on(app, app.channel())
        agent = local.agent("runner", org=ACME)
        run = local.execution("job", agent_id=agent.metadata.id, org=ACME)
        local.report(run.metadata.id, IN_PROGRESS, "working")
        _, leaked = make_token(app, ACME, "editor", "leaked")
        admin, _ = make_token(app, ACME, "admin", "boss")
        filler: Any = local.environments.create(_env("filler", ACME, "f" * 100))
        for _ in range(10):  # the org 8 bytes short of its limit: each update's new times may take a
            # few bytes more or fewer (a Timestamp's nanos is a varint), so it is measured again
            stored = _stored(app)[ACME][1]
            if 40_000 - 12 <= stored <= 40_000:
                break
            filler.spec.data["V"].value = "f" * (len(filler.spec.data["V"].value) + 40_000 - stored - 8)
            filler = local.environments.update(filler)
        assert 40_000 - 12 <= _stored(app)[ACME][1] <= 40_000
        with served(app) as server, grpc.insecure_channel(server.address) as channel:
            boss = with_token(channel, admin)
            _refused(lambda: KindClient(boss, app.registry.kind("Environment")).create(_env("more", ACME, "m" * 700)))
            token_grpc.ApiTokenCommandControllerStub(boss).revoke(apitoken_pb2.ApiTokenId(value=leaked.metadata.id))
            cancelled = Kinds.on(app, boss).cancel(run.metadata.id, "the org is full")
        assert cancelled.status.phase != IN_PROGRESS
        assert _stored(app)[ACME][1] > 40_000  # past the limit, within its sixteenth
        assert _stored(app) == _recounted(app)


def test_a_dry_run_and_a_refused_write_leave_the_counters_as_they_were(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch, objects=10) as app, editor(app, ACME) as acme:
        agents = agent_grpc.AgentCommandControllerStub(acme)
        agent = agents.create(_agent("kept", ACME))
        before = _stored(app)
        agents.create(_agent("dry", ACME), metadata=((DRY_RUN, "true"),))
        agents.delete(agent_pb2.AgentId(value=agent.metadata.id), metadata=((DRY_RUN, "true"),))
        assert _stored(app) == before
        # refused when the transaction publishes, after the write was stored and counted: its owner is missing
        orphan = _env("orphan", ACME)
        orphan.metadata.owner_references.add(kind="Agent", id=new_id(app.registry.kind("Agent").id_prefix))
        with pytest.raises(grpc.RpcError) as missing:
            KindClient(acme, app.registry.kind("Environment")).create(orphan)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND, missing.value.details()
        assert _stored(app) == before == _recounted(app)


def test_the_local_administrator_is_counted_but_never_refused(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch, objects=2, size=1) as app:
        local = KindClient(app.channel(), app.registry.kind("Environment"))
        for i in range(4):
            local.create(_env(f"e{i}", ACME))
        assert _stored(app)[ACME][0] == 4
        with editor(app, ACME) as acme:  # its token made by the administrator: 5
            envs = KindClient(acme, app.registry.kind("Environment"))
            _refused(lambda: envs.create(_env("token-made", ACME)))
            victim: Any = local.get_by_reference(org=ACME, slug="e0")
            envs.delete(victim.metadata.id)  # a delete always works
        assert _stored(app)[ACME][0] == 4
        assert _stored(app) == _recounted(app)


def test_counters_equal_a_recount_after_a_mixed_workload_and_versions_count(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        acme, beta = seed_org(app, ACME), seed_org(app, BETA)
        channel = app.channel()
        skills = KindClient(channel, app.registry.kind("Skill"))
        skill: Any = acme.objects["Skill"]
        held = _stored(app)[ACME][1]
        for i in range(3):  # each new content keeps a version beside the object
            skill.spec.skill_md = f"# Calc\nAdds numbers, take {i}.\n" + "x" * 2_000
            skill.spec.tag = f"v{i + 2}"
            skill = skills.update(skill)
        assert _stored(app)[ACME][1] > held + 3 * 2_000, "each version's bytes count"
        kinds = Kinds.on(app, channel)
        doomed = kinds.agent("doomed", org=BETA)
        kinds.session(doomed.status.default_instance_id, "doomed-chat", org=BETA)
        kinds.agents.delete(doomed.metadata.id)  # a cascade: its instance and session go with it
        KindClient(channel, app.registry.kind("Workflow")).update(beta.objects["Workflow"])
        KindClient(channel, app.registry.kind("ApiToken")).delete(acme.objects["ApiToken"].metadata.id)
        assert _stored(app) == _recounted(app)
        assert set(_stored(app)) == {ACME, BETA}
        skills.delete(skill.metadata.id)
        assert _stored(app) == _recounted(app)
        with app.store.read() as txn:
            assert not list(txn.scan(keys.version_prefix(app.registry.kind("Skill").key_prefix, skill.metadata.id)))


def test_a_store_from_before_the_counters_gets_them_when_opened(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        seed_org(app, ACME)
        seed_org(app, BETA)
        counted = _stored(app)
        assert set(counted) == {ACME, BETA}

        def forget(txn: Any) -> None:
            for key, _ in list(txn.scan(keys.ORG_USAGE)):
                txn.delete(key)
            txn.delete(keys.ORG_USAGE_COUNTED)

        app.store.transact(forget)
        assert _stored(app) == {}
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        assert app.usage_counted
        assert _stored(app) == counted
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        assert not app.usage_counted, "counted once: the marker says so"


def test_check_finds_and_repairs_a_wrong_counter(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch) as app:
        seed_org(app, ACME)
        right = _stored(app)[ACME]
        app.store.transact(lambda txn: txn.put(keys.org_usage_key(ACME), usage.encode(1, 2)))
        app.store.transact(lambda txn: txn.put(keys.org_usage_key("ghost"), usage.encode(3, 4)))
        problems = usage.check(app.registry, app.store)
        assert [(p.org, p.stored, p.counted) for p in problems] == [(ACME, (1, 2), right), ("ghost", (3, 4), (0, 0))]
        usage.check(app.registry, app.store, repair=True)
        assert _stored(app) == {ACME: right}
        assert usage.check(app.registry, app.store) == []


def test_org_limits_are_settings_where_zero_means_none() -> None:
    limits = Limits.from_env({"STIGMER_MAX_ORG_BYTES": "0", "STIGMER_MAX_ORG_OBJECTS": "7"})
    assert (limits.max_org_bytes, limits.max_org_objects) == (0, 7)
    assert (Limits().max_org_bytes, Limits().max_org_objects) == (4 << 30, 1_000_000)
    with pytest.raises(StartupError, match="STIGMER_MAX_ORG_OBJECTS"):
        Limits.from_env({"STIGMER_MAX_ORG_OBJECTS": "-1"})
    tally = usage.Tally(ACME, usage.encode(10**9, 10**15))
    tally.add(0, 10**6)
    tally.check(limits)  # no byte limit
    tally.add(1, 0)
    with pytest.raises(ResourceExhausted, match="max_org_objects"):
        tally.check(limits)


def _zip_of(size: int) -> bytes:
    """A skill artifact of about ``size`` bytes that does not compress."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", SKILL_MD)
        archive.writestr("data.bin", os.urandom(size))
    return buf.getvalue()


SKILL_MD = "---\nname: tool\n---\n# Tool\n"


def test_a_skill_artifact_counts_in_its_org_bytes(
    tmp_path: Path, stigmer_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with team(tmp_path, stigmer_store, monkeypatch, size=200_000) as app, editor(app, ACME) as acme:
        skills = skill_grpc.SkillCommandControllerStub(acme)
        skills.push(skill_pb2.PushSkillRequest(org=ACME, skill_md=SKILL_MD, artifact=_zip_of(50_000)), timeout=10)
        held = _stored(app)[ACME][1]
        assert held > 50_000, "the blob is the org's"
        assert _stored(app) == _recounted(app)
        big = skill_pb2.PushSkillRequest(org=ACME, skill_md=SKILL_MD, artifact=_zip_of(160_000), tag="big")
        message = _refused(lambda: skills.push(big, timeout=10))
        assert "max_org_bytes" in message, message
        assert _stored(app)[ACME][1] == held
        skill: Any = KindClient(app.channel(), app.registry.kind("Skill")).get_by_reference(org=ACME, slug="tool")
        skill_client = KindClient(acme, app.registry.kind("Skill"))
        skill_client.delete(skill.metadata.id)  # its versions and blobs go with it, and their bytes
        assert set(_stored(app)) == {ACME} and _stored(app)[ACME][1] < 1_000
        assert _stored(app) == _recounted(app)


def test_objects_of_a_kind_whose_plugin_is_gone_still_count(tmp_path: Path, stigmer_store: str | None) -> None:
    """Counted when written, they still take their room: doctor sees no mismatch, and neither
    ``--repair`` nor the first start's count (a store from before the counters) drops them."""
    from stigmer_core.plugins import plugin_manager
    from tests.widget_kind import WidgetPlugin, message

    data = tmp_path / "data"
    pm = plugin_manager(plugins=[WidgetPlugin()])
    with Application.open(data, durable=False, store=stigmer_store, pm=pm) as app:
        widgets = KindClient(app.channel(), app.registry.kind("Widget"))
        for name in ("one", "two", "three"):
            widget = message("Widget")()
            widget.metadata.name = name
            widgets.create(widget)
        KindClient(app.channel(), app.registry.kind("Agent")).create(_agent("helper", "local"))
        with_widgets = _stored(app)
        assert with_widgets == _recounted(app)
        assert with_widgets["local"][0] == 5  # three widgets, the agent and its default instance
    with Application.open(data, durable=False, store=stigmer_store) as app:
        assert app.registry.find("Widget") is None
        assert _recounted(app) == with_widgets
        assert usage.check(app.registry, app.store) == []

        def forget(txn: Any) -> None:
            for key, _ in list(txn.scan(keys.ORG_USAGE)):
                txn.delete(key)
            txn.delete(keys.ORG_USAGE_COUNTED)

        app.store.transact(forget)
    with Application.open(data, durable=False, store=stigmer_store) as app:
        assert app.usage_counted
        assert _stored(app) == with_widgets
