"""The Prompt kind's own validation step, next to the framework's field rules,
on the in-process channel and over the network alike."""

from __future__ import annotations

import grpc
import pytest
from prompt_helpers import TIMEOUT, Stubs, invalid_fields, prompt, var

from acme_prompt.api.prompt.v1 import prompt_pb2


def test_placeholders_are_recorded_in_order_of_first_use(stubs: Stubs) -> None:
    created = stubs.commands.create(
        prompt("Greeting", "Hi {{ name }}, {{topic}} again: {{name}}.", {"name": var(), "topic": var()}),
        timeout=TIMEOUT,
    )
    assert list(created.status.placeholders) == ["name", "topic"]
    assert created.kind == "Prompt" and created.metadata.id.startswith("prm-")


def test_each_undeclared_placeholder_is_one_field_violation(stubs: Stubs) -> None:
    request = prompt("Greeting", "Hi {{name}}, about {{topic}} and {{tone}}", {"name": var()})
    violations = invalid_fields(stubs.commands.create, request)
    assert [field for field, _ in violations] == ["spec.template", "spec.template"]
    assert "'{{topic}}'" in violations[0][1] and "'{{tone}}'" in violations[1][1]


def test_a_stray_opening_brace_pair_names_its_offset(stubs: Stubs) -> None:
    violations = invalid_fields(stubs.commands.create, prompt("Broken", "Hi {{Name}}", {"name": var()}))
    assert len(violations) == 1 and violations[0][0] == "spec.template"
    assert "offset 3" in violations[0][1]


def test_apply_runs_the_check_too(stubs: Stubs) -> None:
    violations = invalid_fields(stubs.commands.apply, prompt("Applied", "{{missing}}"))
    assert [field for field, _ in violations] == ["spec.template"]


def test_a_refused_update_leaves_the_stored_prompt_alone(stubs: Stubs) -> None:
    created = stubs.commands.create(prompt("Stable", "Hello {{who}}", {"who": var()}), timeout=TIMEOUT)
    changed = prompt_pb2.Prompt()
    changed.CopyFrom(created)
    changed.spec.template = "Hello {{whom}}"
    assert [field for field, _ in invalid_fields(stubs.commands.update, changed)] == ["spec.template"]
    stored = stubs.queries.get(prompt_pb2.PromptId(value=created.metadata.id), timeout=TIMEOUT)
    assert stored == created


def test_an_update_recomputes_the_placeholders(stubs: Stubs) -> None:
    created = stubs.commands.create(prompt("Moving", "Hello {{who}}", {"who": var(), "when": var()}), timeout=TIMEOUT)
    changed = prompt_pb2.Prompt()
    changed.CopyFrom(created)
    changed.spec.template = "{{when}}: hello {{who}}"
    updated = stubs.commands.update(changed, timeout=TIMEOUT)
    assert list(updated.status.placeholders) == ["when", "who"]


def test_field_rules_from_the_proto_still_apply(stubs: Stubs) -> None:
    violations = invalid_fields(stubs.commands.create, prompt("Bad key", "plain", {"Not-A-Name": var()}))
    assert any(field.startswith("spec.variables") for field, _ in violations), violations
    assert [field for field, _ in invalid_fields(stubs.commands.create, prompt("Empty", ""))] == ["spec.template"]


def test_list_by_variable_reads_the_declared_index(stubs: Stubs) -> None:
    with_tone = stubs.commands.create(prompt("Toned", "{{tone}}", {"tone": var()}), timeout=TIMEOUT)
    stubs.commands.create(prompt("Plain", "no variables"), timeout=TIMEOUT)
    other_org = stubs.commands.create(prompt("Elsewhere", "{{tone}}", {"tone": var()}, org="acme"), timeout=TIMEOUT)
    everywhere = stubs.queries.list(prompt_pb2.ListPromptsRequest(variable="tone"), timeout=TIMEOUT)
    assert [p.metadata.id for p in everywhere.entries] == [with_tone.metadata.id, other_org.metadata.id]
    in_acme = stubs.queries.list(prompt_pb2.ListPromptsRequest(variable="tone", org="acme"), timeout=TIMEOUT)
    assert [p.metadata.id for p in in_acme.entries] == [other_org.metadata.id]


@pytest.mark.parametrize("template", ["{{", "{{}}", "{{ a b }}", "text {{9lives}}"])
def test_malformed_placeholders_are_refused(stubs: Stubs, template: str) -> None:
    violations = invalid_fields(stubs.commands.create, prompt("Malformed", template, {"a": var()}))
    assert [field for field, _ in violations] == ["spec.template"]


def test_not_found_is_not_invalid(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stubs.queries.get(prompt_pb2.PromptId(value="prm-01arz3ndektsv4rrffq69g5fav"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
