"""Queries at 1,000, 10,000 and 100,000 stored agents: indexes and cursors, never a scan.

One store grows through the sizes; at each size the same queries run on the
in-process channel: get by id, getByReference (slug index), a list page of
100 (the org's slug range), a label-filtered page (label index) and a
``listByAgent`` page of sessions (a declared index). A query served by a key
or an index costs about the same at every size, so the figure to read is the
largest size's rate against the smallest's. After the largest size, a real
daemon is started on the store and its resident memory is read once it has
served a list.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench import drive
from bench.budget import Budget
from bench.engines import AGENT_QUERIES, SESSION_QUERIES, opened, seed_agents, seed_sessions
from bench.results import Measurement
from stigmer_core.api.agentic.agent.v1 import agent_pb2
from stigmer_core.api.agentic.session.v1 import session_pb2
from stigmer_core.api.commons.apiresource.v1 import metadata_pb2

PAGE = 100
QUERIES = ("get", "get_by_reference", "list", "list_label", "list_by_agent")
DAEMON_START_SECONDS = 60.0


def _queries(size: int, app: Any, ids: list[str], slugs: list[str], agent_id: str, budget: Budget) -> list[Measurement]:
    agents, sessions = AGENT_QUERIES(app.channel()), SESSION_QUERIES(app.channel())
    gets = [agent_pb2.AgentId(value=i) for i in ids]
    refs = [metadata_pb2.ApiResourceReference(slug=s) for s in slugs]
    page = agent_pb2.ListAgentsRequest(org="local", page_size=PAGE)
    labelled = agent_pb2.ListAgentsRequest(org="local", page_size=PAGE, labels={"team": "t3"})
    by_agent = session_pb2.ListSessionsByAgentRequest(agent_id=agent_id, page_size=PAGE)
    for request, method in ((page, agents.list), (labelled, agents.list), (by_agent, sessions.listByAgent)):
        if len(method(request).entries) != PAGE:
            raise drive.CallFailed(f"scale.n{size}: a page of {PAGE} came back short, not measured")
    stride = max(1, len(ids) // 997)  # spread reads over the whole store
    calls = {
        "get": (lambda i: agents.get(gets[(i * stride) % len(gets)]), budget.calls),
        "get_by_reference": (lambda i: agents.getByReference(refs[(i * stride) % len(refs)]), budget.calls),
        "list": (lambda i: agents.list(page), budget.list_calls),
        "list_label": (lambda i: agents.list(labelled), budget.list_calls),
        "list_by_agent": (lambda i: sessions.listByAgent(by_agent), budget.list_calls),
    }
    found = []
    for name, (call, count) in calls.items():
        drive.warm(call, budget.warmup)
        row = drive.serial(f"scale.n{size}.{name}", call, count=count, seconds=budget.seconds)
        found.append(row.with_facts(stored_agents=size))
    return found


def _daemon_rss_mib(data: Path) -> float:
    """VmRSS of ``stigmer serve`` on ``data`` after it answered one list."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "stigmer_core.cli", "serve", "--address", "127.0.0.1:0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        address = None
        deadline = time.monotonic() + DAEMON_START_SECONDS
        while address is None and time.monotonic() < deadline:
            line = daemon.stdout.readline()
            if not line:
                break
            found = re.search(r"listening on (\S+)", line)
            address = found.group(1) if found else None
        if address is None:
            raise drive.CallFailed("scale: the daemon did not start")
        with grpc.insecure_channel(address) as channel:
            AGENT_QUERIES(channel).list(agent_pb2.ListAgentsRequest(org="local", page_size=PAGE), timeout=30)
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kib / 1024
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=DAEMON_START_SECONDS)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def run(budget: Budget) -> list[Measurement]:
    found: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="stigmer-bench-scale-") as tmp:
        data = Path(tmp)
        ids: list[str] = []
        slugs: list[str] = []
        instance = ""
        agent_id = ""
        sessions = 0
        for size in budget.scale_sizes:
            with opened("lmdb", data, durable=False) as app:
                more_ids, more_slugs, instances = seed_agents(app, size - len(ids), start=len(ids))
                ids += more_ids
                slugs += more_slugs
                instance, agent_id = instance or instances[0], agent_id or more_ids[0]
                seed_sessions(app, [instance], size // 10 - sessions, start=sessions)
                sessions = size // 10
                found += _queries(size, app, ids, slugs, agent_id, budget)
        rss = _daemon_rss_mib(data)
    found[-1] = found[-1].with_facts(daemon_rss_mib=rss)
    return found
