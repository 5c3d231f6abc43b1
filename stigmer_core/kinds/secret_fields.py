"""String fields a kind never sends back, and keeps when what it sent comes back.

``redact`` alone hides a value in every answer, but a client writing back what
it read (an edited label, ``stigmer get -o yaml | stigmer apply -f -``) sends
the placeholder, which an update would then store in place of the secret.
``SecretFields`` gives a kind the three pieces that belong together: its
``redact``, its ``redacts``, and a ``keep`` step for create and update that
keeps the stored value when the placeholder comes back (and refuses it on a
create, where there is nothing to keep).

It does not encrypt: the value is stored as sent (see docs/plugins.md, Secret
fields).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from stigmer_core.errors import InvalidArgument
from stigmer_core.pipeline.phase import Phase
from stigmer_core.pipeline.step import FunctionStep

REDACTED = "<redacted>"
"""What the first-party kinds answer in place of a secret, and ``SecretFields``' default."""


def _is_repeated(field: Any) -> bool:
    # protobuf 7 removed FieldDescriptor.label; 6.x has both.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _parent(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        obj = getattr(obj, part)
    return obj


class SecretFields:
    """Dotted paths (``spec.api_key``) to string fields of a kind's resource that hold secrets::

        SECRETS = SecretFields("spec.publisher_api_key")
        KindDeclaration(..., redact=SECRETS.redact, redacts=SECRETS.redacts,
                        steps={"create": (SECRETS.keep,), "update": (SECRETS.keep,)})
    """

    def __init__(self, *paths: str, placeholder: str = REDACTED) -> None:
        if not paths or not placeholder:
            raise ValueError("SecretFields needs at least one field path and a non-empty placeholder")
        self.paths = paths
        self.placeholder = placeholder
        self._split = [(path, path.split(".")[:-1], path.rsplit(".", 1)[-1]) for path in paths]
        self.keep = FunctionStep("keep_secret_fields", Phase.KIND, self._keep)
        """A KIND step for ``steps["create"]`` and ``steps["update"]`` (``apply`` runs theirs)."""

    def problem(self, resource: Any) -> str | None:
        """What is wrong with the paths for a resource descriptor (the registry asks at startup)."""
        for path, parents, name in self._split:
            desc = resource
            for part in parents:
                field = desc.fields_by_name.get(part)
                if field is None or field.message_type is None:
                    return f"secret field {path!r}: {desc.full_name} has no message field {part!r}"
                desc = field.message_type
            field = desc.fields_by_name.get(name)
            if field is None:
                return f"secret field {path!r}: {desc.full_name} has no field {name!r}"
            if field.type != FieldDescriptor.TYPE_STRING or _is_repeated(field):
                return f"secret field {path!r} must be a singular string field"
        return None

    def redact(self, obj: Message) -> None:
        """Replace every set secret by the placeholder (the kind's ``redact``)."""
        for _, parents, name in self._split:
            parent = _parent(obj, parents)
            if getattr(parent, name):
                setattr(parent, name, self.placeholder)

    def placeheld(self, obj: Message) -> list[str]:
        """The paths of ``obj`` holding the placeholder: what an export carries in place of a
        secret, which a create (an import into a store without the object) refuses."""
        return [path for path, parents, name in self._split if getattr(_parent(obj, parents), name) == self.placeholder]

    def redacts(self, obj: Message) -> bool:
        """Whether ``obj`` holds a secret to hide (the kind's ``redacts``)."""
        return any(getattr(_parent(obj, parents), name) for _, parents, name in self._split)

    def _keep(self, ctx: Any) -> None:
        new, stored = ctx.resource, ctx.existing
        if new is None:
            return
        for path, parents, name in self._split:
            parent = _parent(new, parents)
            if getattr(parent, name) != self.placeholder:
                continue
            if stored is None:
                raise InvalidArgument.field(
                    path, f"is the placeholder {self.placeholder!r} and there is no stored value to keep; send the value"
                )
            setattr(parent, name, getattr(_parent(stored, parents), name))
