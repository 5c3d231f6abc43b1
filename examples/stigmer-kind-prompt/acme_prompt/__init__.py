"""Prompt: a resource kind added to Stigmer Core by a separate package.

Everything the kind needs is declared in ``acme_prompt.plugin`` (registered
under the ``stigmer.kinds`` entry-point group in this package's
pyproject.toml); the generated code in ``acme_prompt.api`` comes from
``proto/`` through ``python -m stigmer_core.protogen``.
"""
