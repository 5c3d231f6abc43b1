"""No secret value of a run outlives it, in any recoverable form, on disk.

The logical store (objects and event log) is checked elsewhere; this reads
the bytes of ``data.mdb`` itself, freed pages included (LMDB copies pages on
write and a freed page keeps its old contents), as someone holding a copy of
the data directory and ``secret.key`` would. Every ``enc:...`` candidate in
the file is tried with the data-directory key under every associated data
the run could have used. While the runs are live the same scan, given the
run keys, finds every canary, so it is a scan that can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stigmer_core import Application
from stigmer_core.kinds.registry import build_registry
from stigmer_core.plugins import plugin_manager
from stigmer_core.store import open_store
from stigmer_core.store.lmdb_store import LmdbStore
from stigmer_plugins.phases import COMPLETED, IN_PROGRESS
from stigmer_plugins.run_keys import RECLAIM_FLOOR, SLOT
from stigmer_plugins.secrets import PREFIX, RUN_KEYS_FILE, secrets
from tests import workflow_helpers as wf
from tests.agent_execution_support import Kinds
from tests.secret_scan import opened

ENV_CANARY = "canary-env-5d1f0e77"
AGENT_CANARY = "canary-agent-a83c41b2"
WORKFLOW_CANARY = "canary-workflow-e02b9c6d"
CANCELLED_CANARY = "canary-cancelled-7b4410fa"
RUN_CANARIES = (AGENT_CANARY, WORKFLOW_CANARY, CANCELLED_CANARY)


@pytest.fixture(params=[False, True], ids=["nosync", "durable"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Application]:
    """Both durabilities: a durable store also syncs the run keys' file (after each commit)."""
    with Application.open(tmp_path / "data", durable=request.param) as found:
        yield found


# LMDB only: reads data.mdb's bytes, freed pages included, and LMDB's run-keys slot file.
def test_a_finished_runs_secrets_cannot_be_recovered_from_data_mdb(app: Application) -> None:
    channel = app.channel()
    kinds = Kinds.on(app, channel)
    env = kinds.environment("prod", {"DB": (ENV_CANARY, True), "REGION": ("eu", False)})
    agent = kinds.agent(env_slugs=["prod"])
    agent_run = kinds.execution(agent_id=agent.metadata.id, runtime_env={"TOKEN": (AGENT_CANARY, True)})
    cancelled = kinds.execution("second", agent_id=agent.metadata.id, runtime_env={"TOKEN": (CANCELLED_CANARY, True)})
    stubs, runs = wf.Stubs(channel), wf.Executions(channel)
    workflow = stubs.workflows.create(wf.workflow())
    workflow_run = runs.create(
        wf.execution("nightly", workflow_id=workflow.metadata.id, runtime_env={"TOKEN": (WORKFLOW_CANARY, True)})
    )
    workflow_context = kinds.contexts.get_by_reference(slug=workflow_run.metadata.id).metadata.id
    context_ids = [agent_run.status.execution_context_id, cancelled.status.execution_context_id, workflow_context]
    contexts = [f"{c}/{k}" for c in context_ids for k in ("TOKEN", "DB", "REGION")]
    all_contexts = [*contexts, f"{env.metadata.id}/DB"]
    keyring = secrets(app.registry)
    data_mdb = Path(app.store.path) / "data.mdb"  # type: ignore[attr-defined]
    run_keys = Path(app.store.path) / RUN_KEYS_FILE  # type: ignore[attr-defined]

    # live: the run keys open every canary's sealed copy in data.mdb (the scan works)
    with app.store.read() as txn:
        live_boxes = [keyring.run_box(txn, f"executioncontexts/{c}") for c in context_ids]
    assert all(b is not None for b in live_boxes)
    live = opened(data_mdb.read_bytes(), [b for b in live_boxes if b is not None], contexts)
    assert set(live.values()) == {*RUN_CANARIES, ENV_CANARY}
    assert keyring.runs.count() == 3 and any(run_keys.read_bytes())

    # the runs end three ways
    kinds.report(agent_run.metadata.id, IN_PROGRESS, "working")
    kinds.report(agent_run.metadata.id, COMPLETED, "done")
    kinds.cancel(cancelled.metadata.id, "stop")
    runs.report(workflow_run.metadata.id, wf.report(IN_PROGRESS))
    runs.cancel(workflow_run.metadata.id, "enough")
    with app.store.read() as txn:
        assert [keyring.run_box(txn, f"executioncontexts/{c}") for c in context_ids] == [None, None, None]

    raw = data_mdb.read_bytes()
    assert [c for c in (*RUN_CANARIES, ENV_CANARY) if c.encode() in raw] == [], "nothing in clear"
    with_key = opened(raw, [keyring.master], all_contexts)
    assert with_key == {f"{env.metadata.id}/DB": ENV_CANARY}, (
        "with secret.key, only the environment's own value opens; nothing of the runs"
    )
    assert not any(run_keys.read_bytes()), "every run key's record is overwritten with zeros"
    assert keyring.runs.count() == 0
    channel.close()


def test_secret_values_in_old_events_are_not_kept(stigmer_app: Application) -> None:
    """An environment's replaced secret is not kept by the event log (events of a kind with
    ``redact`` are stored redacted)."""
    channel = stigmer_app.channel()
    kinds = Kinds.on(stigmer_app, channel)
    env = kinds.environment("prod", {"DB": ("first-value", True)})
    env.spec.data["DB"].value = "second-value"
    kinds.environments.update(env)
    with stigmer_app.store.read() as txn:
        events = b"".join(payload for _, payload in txn.events(0))
    assert PREFIX.encode() not in events and b"<redacted>" in events
    channel.close()


# LMDB only: the reclaimed record is in LMDB's run-keys slot file (PostgreSQL's run keys are rows, rolled back).
def test_a_run_key_whose_write_failed_is_reclaimed_at_startup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Application.open(data, durable=False) as first:
        keyring = secrets(first.registry)

        def fail(txn: object) -> None:
            keyring.new_run_box(txn, "executioncontexts/exc-01arz3ndektsv4rrffq69g5fav")  # type: ignore[arg-type]
            raise RuntimeError("the write fails after the key was made")

        with pytest.raises(RuntimeError):
            first.store.transact(fail)
        assert keyring.runs.count() == 1
    with Application.open(data, durable=False) as again:
        assert secrets(again.registry).runs.count() == 0
    assert not any((data / RUN_KEYS_FILE).read_bytes())


# LMDB only: the file that must not grow is LMDB's run-keys slot file.
def test_orphan_run_keys_are_reclaimed_before_the_file_grows(app: Application) -> None:
    keyring = secrets(app.registry)

    def orphan(n: int) -> None:
        def fail(txn: object) -> None:
            keyring.new_run_box(txn, f"executioncontexts/exc-orphan-{n}")  # type: ignore[arg-type]
            raise RuntimeError("the write fails after the key was made")

        with pytest.raises(RuntimeError):
            app.store.transact(fail)

    for n in range(RECLAIM_FLOOR):
        orphan(n)
    run_keys = Path(app.store.path) / RUN_KEYS_FILE  # type: ignore[attr-defined]
    assert run_keys.stat().st_size == RECLAIM_FLOOR * SLOT and keyring.runs.count() == RECLAIM_FLOOR
    channel = app.channel()
    kinds = Kinds.on(app, channel)
    run = kinds.execution(agent_id=kinds.agent().metadata.id, runtime_env={"K": (AGENT_CANARY, True)})
    assert keyring.runs.count() == 1, "the orphans were reclaimed instead of growing the file"
    assert run_keys.stat().st_size == RECLAIM_FLOOR * SLOT
    assert kinds.contexts.get(run.status.execution_context_id).spec.data["K"].value == AGENT_CANARY
    channel.close()


class OtherEngine:
    """A store that is not LMDB (as PostgreSQL is not): the same protocol, delegated."""

    def __init__(self, inner: LmdbStore) -> None:
        self.inner = inner

    def read(self, *, restartable: bool = False) -> Any:
        return self.inner.read(restartable=restartable)

    def transact(self, fn: Any) -> Any:
        return self.inner.transact(fn)

    def wait_for_revision(self, after: int, timeout: float) -> int:
        return self.inner.wait_for_revision(after, timeout)

    def close(self) -> None:
        self.inner.close()


def test_other_engines_keep_run_keys_in_the_store(tmp_path: Path, stigmer_store: str | None) -> None:
    """On LMDB through ``OtherEngine``; on PostgreSQL itself."""
    pm = plugin_manager()
    data = tmp_path / "data"
    store = (
        OtherEngine(LmdbStore(data, durable=False))
        if stigmer_store is None
        else open_store(stigmer_store, durable=False)
    )
    with Application(build_registry(pm), store, pm, data_dir=data) as app:
        channel = app.channel()
        kinds = Kinds.on(app, channel)
        run = kinds.execution(agent_id=kinds.agent().metadata.id, runtime_env={"K": (AGENT_CANARY, True)})
        context_id = run.status.execution_context_id
        with app.store.read() as txn:
            assert [k for k, _ in txn.scan(b"k/")] == [f"k/executioncontexts/{context_id}".encode()]
        assert not (data / RUN_KEYS_FILE).exists()
        keyring = secrets(app.registry)
        done = keyring.rotate(app.store, app.registry, bytes(range(32)), lambda key: None)
        assert done.run_keys == 1, "re-wrapped in the rotation's transaction"
        assert kinds.contexts.get(context_id).spec.data["K"].value == AGENT_CANARY
        kinds.cancel(run.metadata.id)
        with app.store.read() as txn:
            assert list(txn.scan(b"k/")) == [], "destroyed in the run's last transaction"
        channel.close()
