"""McpServer: a resource kind added to Stigmer Core by a separate package.

Everything the kind needs is declared in ``acme_mcp.plugin`` (registered
under the ``stigmer.kinds`` entry-point group in this package's
pyproject.toml); the generated code in ``acme_mcp.api`` comes from
``proto/`` through ``python -m stigmer_core.protogen``.
"""
