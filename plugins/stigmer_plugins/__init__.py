"""First-party kind plugins.

Each module is registered under the ``stigmer.kinds`` entry-point group in
pyproject.toml, exactly as a third-party package registers its own.
"""
