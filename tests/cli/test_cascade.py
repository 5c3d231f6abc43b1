"""``delete`` says what went with the object, ``--dry-run`` only says it, and a refusal names the way out."""

from __future__ import annotations

from stigmer_core.headers import REMOVED_LISTED
from stigmer_core.ids import derived_id, new_id

from .conftest import Stigmer, lines


def _agent_with_session(stigmer: Stigmer) -> str:
    agent = new_id("agt")
    instance = derived_id("ain", agent, "default")
    stigmer.ok(
        "apply",
        "-f",
        "-",
        input=f"""\
kind: Agent
metadata: {{id: {agent}, name: Helper}}
spec: {{instructions: Be kind.}}
---
kind: Session
metadata: {{name: Chat}}
spec: {{agentInstanceId: {instance}, subject: hi}}
""",
    )
    return agent


def test_dry_run_shows_the_cascade_and_deletes_nothing(stigmer: Stigmer, daemon: str) -> None:
    _agent_with_session(stigmer)
    planned = lines(stigmer.ok("delete", "agent", "helper", "--dry-run"))
    assert planned == [
        "agent/helper would be deleted (dry run)",
        "agentinstance/helper-default would be deleted with it (dry run)",
        "session/chat would be deleted with it (dry run)",
    ]
    assert "helper" in stigmer.ok("get", "agent", "helper")
    assert "chat" in stigmer.ok("get", "session", "chat")

    assert lines(stigmer.ok("delete", "agent", "helper")) == [
        "agent/helper deleted",
        "agentinstance/helper-default deleted with it",
        "session/chat deleted with it",
    ]
    assert stigmer.fails("get", "session", "chat") == "session 'chat' not found in org 'local'"


def test_refused_delete_names_cancel_and_cancel_clears_it(stigmer: Stigmer, daemon: str) -> None:
    agent = _agent_with_session(stigmer)
    stigmer.ok(
        "apply",
        "-f",
        "-",
        input=f"kind: AgentExecution\nmetadata: {{name: Run}}\nspec: {{agentId: {agent}, message: go}}\n",
    )
    message = stigmer.fails("delete", "agent", "helper")
    assert "is still referenced by agent execution 'run'" in message
    assert message.endswith(
        "`stigmer cancel agentexecution run` ends it, or `stigmer delete agentexecution run` removes it"
    )

    assert stigmer.ok("cancel", "agentexecution", "run", "--reason", "not needed").strip() == (
        "agentexecution/run cancelled (EXECUTION_CANCELLED)"
    )
    assert lines(stigmer.ok("delete", "agent", "helper"))[0] == "agent/helper deleted"
    assert stigmer.fails("cancel", "agent", "x") == "agents cannot be cancelled: the kind has no 'cancel' rpc"


def test_a_big_cascade_lists_what_the_server_named_and_counts_the_rest(stigmer: Stigmer, daemon: str) -> None:
    agent = _agent_with_session(stigmer)
    instance = derived_id("ain", agent, "default")
    more = "".join(
        f"---\nkind: Session\nmetadata: {{name: Chat {i}}}\nspec: {{agentInstanceId: {instance}, subject: hi}}\n"
        for i in range(REMOVED_LISTED)
    )
    stigmer.ok("apply", "-f", "-", input=more)
    printed = lines(stigmer.ok("delete", "agent", "helper"))
    assert printed[:3] == [
        "agent/helper deleted",
        "agentinstance/helper-default deleted with it",
        "session/chat deleted with it",
    ]
    assert len(printed) == REMOVED_LISTED + 1
    assert printed[-1] == "3 more sessions deleted with it"  # 51 sessions, 48 of them named


def test_an_environment_held_by_a_default_instance_names_the_edit_not_a_delete(stigmer: Stigmer, daemon: str) -> None:
    agent = new_id("agt")
    stigmer.ok(
        "apply",
        "-f",
        "-",
        input=f"""\
kind: Environment
metadata: {{name: Gamma}}
spec: {{data: {{G: {{value: g}}}}}}
---
kind: Agent
metadata: {{id: {agent}, name: Helper}}
spec: {{instructions: Be kind.}}
""",
    )
    stigmer.ok(
        "apply",
        "-f",
        "-",
        input=f"""\
kind: AgentInstance
metadata: {{name: Helper (default), slug: helper-default}}
spec: {{agentId: {agent}, environmentRefs: [{{slug: gamma}}]}}
""",
    )
    message = stigmer.fails("delete", "environment", "gamma")
    assert message == (
        "environment 'gamma' is still referenced by agent instance 'helper-default' (spec.environment_refs), "
        "the default instance of agent 'helper'; remove it from the instance's spec.environment_refs "
        "(it goes only with its agent)"
    )  # no `stigmer delete agentinstance helper-default`: that is refused


def test_a_cascade_held_by_another_agent_says_what_it_would_take_and_offers_no_delete(
    stigmer: Stigmer, daemon: str
) -> None:
    owner = new_id("agt")
    stigmer.ok(
        "apply",
        "-f",
        "-",
        input=f"""\
kind: Agent
metadata: {{id: {owner}, name: Owner}}
spec: {{instructions: Be kind.}}
---
kind: Environment
metadata: {{name: Owned, ownerReferences: [{{kind: Agent, id: {owner}}}]}}
spec: {{data: {{O: {{value: o}}}}}}
---
kind: Agent
metadata: {{name: Other}}
spec: {{instructions: Be kind., environmentRefs: [{{slug: owned}}]}}
""",
    )
    for dry in ((), ("--dry-run",)):
        message = stigmer.fails("delete", "agent", "owner", *dry)
        assert message == (
            "deleting agent 'owner' would delete environment 'owned' with it (it owns it), but environment "
            "'owned' is still referenced by agent 'other' (spec.environment_refs); remove it from there first"
        )  # not `stigmer delete agent other`: the way out is an edit of that agent
