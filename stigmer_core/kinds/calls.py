"""Whether a function a kind declares can be called the way the framework calls it.

A function of the wrong arity (``delete_guard=lambda: None``) passed startup and then failed
every delete of the kind with INTERNAL; binding placeholder arguments to its signature says at
startup what each call would raise, before anything is served.
"""

from __future__ import annotations

import inspect

__all__ = ["call_refused"]


def call_refused(function: object, call: str, named: str = "") -> str | None:
    """Why ``function`` (``named``: the name ``call`` gives it) cannot be called as ``call`` says
    (``delete_guard(store, obj, inside)``, every argument positional), or None when it can, or
    when nothing can be told: a builtin or a C callable without a signature is let through
    rather than refused on a guess."""
    where = named or call.partition("(")[0]
    arguments = [a for a in call.partition("(")[2].rstrip(")").split(", ") if a]
    if not callable(function):
        return f"{where} is called as {call}, but it is {type(function).__name__}, not a function"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*arguments)
    except TypeError as exc:
        return f"{where} is called as {call}, which {_shown(function, signature)} cannot take: {exc}"
    return None


def _shown(function: object, signature: inspect.Signature) -> str:
    """The function as its author wrote it, without annotations (which can be long and say
    nothing about how many arguments it takes)."""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if not isinstance(name, str):
        name = f"a {type(function).__name__}"
    name = name.rpartition(".<locals>.")[2]  # a function defined in another: its own name
    bare = signature.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    return f"{name}{bare}"
