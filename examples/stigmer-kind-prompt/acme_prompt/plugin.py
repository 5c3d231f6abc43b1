"""The Prompt kind, declared: the whole of what Stigmer Core needs to serve it.

Registered in pyproject.toml under the ``stigmer.kinds`` entry-point group;
installing this package is what makes a daemon serve
``acme.prompt.v1.PromptCommandController`` and ``PromptQueryController``.
"""

from __future__ import annotations

from google.protobuf.message import Message
from stigmer_core import CustomOperation, IndexSpec, KindDeclaration, hookimpl
from stigmer_core.pipeline import steps as standard

from acme_prompt import steps
from acme_prompt.api.prompt.v1 import prompt_pb2, service_pb2


def _variables(prompt: Message) -> list[tuple[str, ...]]:
    """Index entries: one per declared variable, so ``list(variable=...)`` reads one key range."""
    assert isinstance(prompt, prompt_pb2.Prompt)
    return [(name,) for name in sorted(prompt.spec.variables)]


_services = service_pb2.DESCRIPTOR.services_by_name

PROMPT = KindDeclaration(
    name="Prompt",
    resource=prompt_pb2.Prompt,
    command_service=_services["PromptCommandController"],
    query_service=_services["PromptQueryController"],
    id_prefix="prm",
    key_prefix="prompts",
    steps={
        "create": (steps.check_placeholders, steps.record_placeholders),
        "update": (steps.check_placeholders, steps.record_placeholders),
        # apply's transaction runs create's or update's steps (record_placeholders
        # among them); only what runs before the transaction is declared for it.
        "apply": (steps.check_placeholders,),
    },
    operations={
        "render": CustomOperation(
            steps=(standard.validate, standard.authorize, steps.load_prompt, steps.render, standard.respond)
        ),
    },
    indexes=(IndexSpec("variable", _variables),),
    list_filters={"variable": "variable"},
    api_version="prompt.acme.dev/v1",
    plural="prompts",
    description="A prompt template with declared variables.",
)


@hookimpl
def stigmer_kinds() -> list[KindDeclaration]:
    return [PROMPT]
