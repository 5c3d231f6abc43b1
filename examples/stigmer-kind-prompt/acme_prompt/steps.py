"""The Prompt kind's own steps.

Field rules (lengths, patterns) live in the .proto and are checked by the
framework's ``validate`` step; what a single field rule cannot say (every
placeholder of the template names a declared variable) is checked here,
before the store transaction, with the same field-level InvalidArgument.
"""

from __future__ import annotations

from stigmer_core import FieldViolation, InvalidArgument, Phase, RequestContext, step

from acme_prompt import templates
from acme_prompt.api.prompt.v1 import prompt_pb2

TEMPLATE = "spec.template"


def _prompt(ctx: RequestContext) -> prompt_pb2.Prompt:
    found = ctx.kind.resource_in(ctx.request)
    assert isinstance(found, prompt_pb2.Prompt)
    return found


def _placeholders(spec: prompt_pb2.PromptSpec) -> list[str]:
    try:
        return templates.placeholders(spec.template)
    except templates.TemplateError as exc:
        raise InvalidArgument.field(TEMPLATE, str(exc)) from None


@step(Phase.VALIDATE)
def check_placeholders(ctx: RequestContext) -> None:
    """Refuse a template whose placeholders name undeclared variables, one violation each."""
    spec = _prompt(ctx).spec
    undeclared = [name for name in _placeholders(spec) if name not in spec.variables]
    if undeclared:
        violations = [
            FieldViolation(TEMPLATE, f"placeholder '{{{{{name}}}}}' names no variable in spec.variables")
            for name in undeclared
        ]
        raise InvalidArgument(f"{TEMPLATE}: undeclared variables: {', '.join(undeclared)}", violations)


@step(Phase.KIND)
def record_placeholders(ctx: RequestContext) -> None:
    """Status lists the placeholders, so clients see a prompt's inputs without parsing it."""
    prompt = ctx.resource
    assert isinstance(prompt, prompt_pb2.Prompt)
    del prompt.status.placeholders[:]
    prompt.status.placeholders.extend(_placeholders(prompt.spec))


@step(Phase.LOAD)
def load_prompt(ctx: RequestContext) -> None:
    request = ctx.request
    assert isinstance(request, prompt_pb2.RenderPromptRequest)
    ctx.existing = ctx.store.require(ctx.kind, request.prompt_id)


@step(Phase.KIND)
def render(ctx: RequestContext) -> None:
    """Fill the template: given value, else the default, else empty; refuse what cannot be filled."""
    request, prompt = ctx.request, ctx.existing
    assert isinstance(request, prompt_pb2.RenderPromptRequest) and isinstance(prompt, prompt_pb2.Prompt)
    variables = prompt.spec.variables
    problems = [
        FieldViolation(f'values["{name}"]', f"prompt '{prompt.metadata.slug}' declares no variable '{name}'")
        for name in sorted(request.values)
        if name not in variables
    ]
    defaulted: list[str] = []
    for name in templates.placeholders(prompt.spec.template):
        if name in request.values:
            continue
        variable = variables[name]
        if variable.default_value:
            defaulted.append(name)
        elif variable.required:
            problems.append(FieldViolation(f'values["{name}"]', "is required and has no default value"))
    if problems:
        summary = "; ".join(f"{v.field}: {v.description}" for v in problems)
        raise InvalidArgument(f"cannot render prompt '{prompt.metadata.slug}': {summary}", problems)

    def value_of(name: str) -> str:
        return request.values[name] if name in request.values else variables[name].default_value

    text = templates.fill(prompt.spec.template, value_of)
    ctx.response = prompt_pb2.RenderPromptResponse(text=text, defaulted=defaulted)
