"""The custom ``render`` rpc, bound through CustomOperation: a read-only pipeline
made of standard steps and two of the kind's own."""

from __future__ import annotations

import grpc
import pytest
from prompt_helpers import TIMEOUT, Stubs, invalid_fields, prompt, var

from acme_prompt import templates
from acme_prompt.api.prompt.v1 import prompt_pb2


def _render(stubs: Stubs, prompt_id: str, **values: str) -> prompt_pb2.RenderPromptResponse:
    request = prompt_pb2.RenderPromptRequest(prompt_id=prompt_id, values=values)
    response: prompt_pb2.RenderPromptResponse = stubs.queries.render(request, timeout=TIMEOUT)
    return response


@pytest.fixture
def greeting(stubs: Stubs) -> prompt_pb2.Prompt:
    created: prompt_pb2.Prompt = stubs.commands.create(
        prompt(
            "Greeting",
            "Dear {{name}}, {{ body }} -- {{signature}}",
            {"name": var(required=True), "body": var("thanks for writing"), "signature": var()},
        ),
        timeout=TIMEOUT,
    )
    return created


def test_given_values_then_defaults_then_empty(stubs: Stubs, greeting: prompt_pb2.Prompt) -> None:
    rendered = _render(stubs, greeting.metadata.id, name="Ada")
    assert rendered.text == "Dear Ada, thanks for writing -- "
    assert list(rendered.defaulted) == ["body"]
    rendered = _render(stubs, greeting.metadata.id, name="Ada", body="hello", signature="Bob")
    assert rendered.text == "Dear Ada, hello -- Bob" and not rendered.defaulted


def test_a_missing_required_value_is_a_field_violation(stubs: Stubs, greeting: prompt_pb2.Prompt) -> None:
    request = prompt_pb2.RenderPromptRequest(prompt_id=greeting.metadata.id)
    violations = invalid_fields(stubs.queries.render, request)
    assert violations == [('values["name"]', "is required and has no default value")]


def test_values_for_undeclared_variables_are_refused(stubs: Stubs, greeting: prompt_pb2.Prompt) -> None:
    request = prompt_pb2.RenderPromptRequest(prompt_id=greeting.metadata.id, values={"name": "A", "mood": "x"})
    assert [field for field, _ in invalid_fields(stubs.queries.render, request)] == ['values["mood"]']


def test_render_of_an_unknown_prompt_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _render(stubs, "prm-01arz3ndektsv4rrffq69g5fav")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_render_request_field_rules_apply(stubs: Stubs) -> None:
    assert [f for f, _ in invalid_fields(stubs.queries.render, prompt_pb2.RenderPromptRequest())] == ["prompt_id"]


def test_render_writes_nothing(stubs: Stubs, greeting: prompt_pb2.Prompt) -> None:
    _render(stubs, greeting.metadata.id, name="Ada")
    stored = stubs.queries.get(prompt_pb2.PromptId(value=greeting.metadata.id), timeout=TIMEOUT)
    assert stored == greeting


def test_the_template_rules_on_their_own() -> None:
    assert templates.placeholders("{{a}}{{ b }}{{a}}") == ["a", "b"]
    assert templates.placeholders("no braces, } or { alone") == []
    assert templates.fill("{{a}}-{{ b }}", str.upper) == "A-B"
    with pytest.raises(templates.TemplateError) as caught:
        templates.placeholders("ok {{a}} then {{ oops")
    assert caught.value.offset == 14
